"""Untrusted bytes -> a safe RGB Pillow image: allow-listed formats, pixel caps before allocation."""

from __future__ import annotations

import contextlib
import io
import struct
import threading
import warnings
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ApiError

T = TypeVar("T")

# Decoded by content, never by file name; anything else is a 415.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
# A picture wider than this many times its height (or the reverse) is cropped to its centre first:
# the encoders look at a centre crop anyway, and it keeps resizing cheap for 1 x 100000 strips.
MAX_ASPECT = 4.0
BACKGROUND = (255, 255, 255)


def _looks_allowed(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow's warning zone lies above our own (lower) cap, checked below with a clearer message;
            # its DecompressionBombError (over twice its limit) still stops a bomb here, from the header alone.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise ApiError(413, "image_too_large", "The image declares more pixels than this server decodes.") from None
    except UnidentifiedImageError:
        if _looks_allowed(data):
            raise ApiError(400, "invalid_image", "The image file is corrupt or truncated.") from None
        raise ApiError(
            415,
            "unsupported_image_format",
            "The image is not in a supported format (JPEG, PNG, WebP, GIF, BMP).",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise ApiError(400, "invalid_image", "The image file is corrupt or truncated.") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ApiError(422, "invalid_image_size", f"The image is {width}x{height} pixels; it must be at least 1x1.")
    if width * height > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"The image is {width}x{height} = {width * height} pixels; this server decodes at most {max_pixels}.",
        )
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit and float greyscale: Pillow's own convert("L") clips instead of scaling.
        array = np.asarray(image, dtype=np.float32)
        scale = 257.0 if mode != "F" or array.max(initial=0) > 1.0 else 1 / 255.0
        array = np.clip(array / scale, 0, 255).astype(np.uint8)
        return Image.fromarray(array, "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if mode == "RGB" else image.convert("RGB")


def _crop_extreme_aspect(image: Image.Image) -> Image.Image:
    width, height = image.size
    if width > MAX_ASPECT * height:
        keep = int(MAX_ASPECT * height)
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    if height > MAX_ASPECT * width:
        keep = int(MAX_ASPECT * width)
        top = (height - keep) // 2
        return image.crop((0, top, width, top + keep))
    return image


# Decoding a large PNG/WebP/BMP/GIF allocates its full size (up to MAX_IMAGE_PIXELS x 3 bytes and more
# while converting); JPEG decodes at a reduced scale. Letting only two such decodes run at once per worker
# bounds that transient memory however many request threads receive large images together.
LARGE_PIXELS = 8_000_000
LARGE_DECODES = threading.BoundedSemaphore(2)


def decode_and_preprocess(data: bytes, *, max_pixels: int, min_side: int, preprocess: Callable[[Image.Image], T]) -> T:
    """Decode one untrusted image into RGB and `preprocess` it; ApiError (400/413/415/422) if unusable.

    `min_side` lets JPEG decode at a reduced scale (Pillow's draft) while keeping both sides >= it. A large
    non-JPEG image is decoded and preprocessed under LARGE_DECODES, so its full-size pixels are counted.
    """
    if not data:
        raise ApiError(400, "empty_image", "An image part is empty (0 bytes).")
    image = _open(data, max_pixels)
    width, height = image.size
    large = width * height > LARGE_PIXELS and image.format != "JPEG"
    with LARGE_DECODES if large else contextlib.nullcontext():
        return preprocess(_decode(image, min_side))


def _decode(image: Image.Image, min_side: int) -> Image.Image:
    try:
        if image.format == "JPEG" and min_side:
            image.draft("RGB", (min_side, min_side))
        image.seek(0)  # first frame of an animation
        image.load()
        try:
            ImageOps.exif_transpose(image, in_place=True)  # not in place, it copies every upright image
        except Exception:  # noqa: BLE001 - a malformed EXIF block only loses the orientation
            pass
        image = _crop_extreme_aspect(image)
        return _to_rgb(image)
    except ApiError:
        raise
    except Image.DecompressionBombError:
        raise ApiError(413, "image_too_large", "The image declares more pixels than this server decodes.") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error):
        raise ApiError(400, "invalid_image", "The image file is corrupt or truncated.") from None
