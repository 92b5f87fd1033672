"""Hostile and broken inputs, generated here: each gets its documented 4xx JSON error and never poisons the worker.

Also the odd-but-valid pictures (CMYK, 16-bit, palette, RGBA, animations, EXIF rotation, 1x1, 1x10000), which
must work, and the two decompression bombs, refused with the process's peak memory measured during the request.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from app import create_app
from tests.conftest import encode_image

MB = 1024 * 1024
rng = np.random.default_rng(7)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4}[mode]
    array = np.random.default_rng(seed).integers(0, 255, (h, w, channels), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def grey_png(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def header_bomb_png(side: int = 50_000) -> bytes:
    """A few hundred bytes whose header declares side x side pixels."""
    return grey_png(side, side, zlib.compress(b"\x00" * 1024))


def compressible_png(side: int = 12_000) -> bytes:
    """A complete, valid side x side grey PNG (all rows stored), a few hundred KB: only our pixel cap stops it."""
    compressor, row, parts = zlib.compressobj(9), b"\x00" + b"\x80" * side, []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    return grey_png(side, side, b"".join(parts))


def patch(data: bytes, offset: int, packed: bytes) -> bytes:
    return data[:offset] + packed + data[offset + len(packed) :]


def huge_jpeg() -> bytes:
    data = encode_image(noise(16, 16), "JPEG")
    sof = data.index(b"\xff\xc0")
    return patch(data, sof + 5, struct.pack(">HH", 65000, 65000))


def huge_gif() -> bytes:
    return patch(encode_image(noise(8, 8).convert("P"), "GIF"), 6, struct.pack("<HH", 65535, 65535))


def huge_bmp() -> bytes:
    return patch(encode_image(noise(8, 8), "BMP"), 18, struct.pack("<ii", 60000, 60000))


def multipart(fields: list[tuple[str, bytes, str | None]], boundary: str = "xYzZY") -> tuple[bytes, str]:
    """A hand-built multipart body, so that bytes a client library would clean up get through."""
    out = io.BytesIO()
    for name, value, filename in fields:
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"Content-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


PNG = encode_image(noise(40, 30))
JPEG = encode_image(noise(40, 30), "JPEG")
WEBP = encode_image(noise(40, 30), "WEBP")


def image_part(data: bytes, name: str = "image", filename: str = "x.png") -> dict:
    body, content_type = multipart([(name, data, filename)])
    return {"data": body, "content_type": content_type}


def json_images(*images: bytes, **extra) -> dict:
    return {"json": {"images": [b64(i) for i in images], **extra}}


def raw(body: bytes, content_type: str | None = "application/json") -> dict:
    return {"data": body, "content_type": content_type} if content_type else {"data": body}


# (id, path, request kwargs, status, error code)
HOSTILE = [
    # images: empty, truncated, corrupt, wrong format, polyglots
    ("zero-byte-part", "/encode", image_part(b""), 400, "empty_image"),
    ("zero-byte-json", "/encode", {"json": {"images": [""]}}, 400, "empty_image"),
    ("png-signature-only", "/encode", json_images(PNG[:8]), 400, "invalid_image"),
    ("png-truncated-half", "/encode", json_images(PNG[: len(PNG) // 2]), 400, "invalid_image"),
    ("png-truncated-in-header", "/encode", json_images(PNG[:20]), 400, "invalid_image"),
    ("png-corrupt-idat", "/encode", json_images(patch(PNG, 60, b"\xde\xad\xbe\xef" * 8)), 400, "invalid_image"),
    ("jpeg-truncated", "/encode", json_images(JPEG[: len(JPEG) // 2]), 400, "invalid_image"),
    ("jpeg-soi-only", "/encode", json_images(b"\xff\xd8\xff"), 400, "invalid_image"),
    ("webp-truncated", "/encode", json_images(WEBP[:30]), 400, "invalid_image"),
    ("gif-header-only", "/encode", json_images(b"GIF89a"), 400, "invalid_image"),
    (
        "tiff",
        "/encode",
        image_part(encode_image(noise(8, 8), "TIFF"), filename="x.png"),
        415,
        "unsupported_image_format",
    ),
    ("ico", "/encode", json_images(encode_image(noise(16, 16), "ICO")), 415, "unsupported_image_format"),
    ("pdf", "/encode", json_images(b"%PDF-1.7\n1 0 obj<<>>endobj\n"), 415, "unsupported_image_format"),
    ("svg", "/encode", json_images(b'<svg xmlns="http://www.w3.org/2000/svg"/>'), 415, "unsupported_image_format"),
    ("polyglot-gif-js", "/encode", json_images(b"GIF89a/*\x00\x00*/=alert(1);"), 400, "invalid_image"),
    ("polyglot-png-html", "/encode", json_images(b"\x89PNG\r\n\x1a\n<html><script>x</script>"), 400, "invalid_image"),
    ("text-as-image-part", "/encode", image_part(b"hello, world", filename="cat.jpg"), 415, "unsupported_image_format"),
    # bombs: refused from the header, before any pixel is allocated
    ("png-header-50000x50000", "/encode", image_part(header_bomb_png()), 413, "image_too_large"),
    ("jpeg-header-65000x65000", "/encode", json_images(huge_jpeg()), 413, "image_too_large"),
    ("gif-screen-65535x65535", "/encode", json_images(huge_gif()), 413, "image_too_large"),
    ("bmp-header-60000x60000", "/encode", json_images(huge_bmp()), 413, "image_too_large"),
    # base64
    ("bad-base64-chars", "/encode", {"json": {"images": ["@@@not-base64@@@"]}}, 400, "invalid_base64"),
    ("bad-base64-padding", "/encode", {"json": {"images": ["AAA"]}}, 400, "invalid_base64"),
    ("data-url-bad-payload", "/encode", {"json": {"images": ["data:image/png;base64,%%%"]}}, 400, "invalid_base64"),
    # JSON structure and types
    ("json-syntax", "/encode", raw(b'{"texts": ["a"'), 400, "invalid_json"),
    ("json-array-body", "/encode", {"json": ["a"]}, 400, "invalid_json"),
    ("json-nesting-bomb", "/encode", raw(b"[" * 200_000), 400, "invalid_json"),
    ("json-invalid-utf8", "/encode", raw(b'{"texts": ["caf\xe9"]}'), 400, "invalid_json"),
    ("json-empty-body", "/encode", raw(b""), 400, "invalid_json"),
    ("texts-not-a-list", "/encode", {"json": {"texts": "a cat"}}, 400, "invalid_field"),
    ("texts-item-number", "/encode", {"json": {"texts": ["a", 7]}}, 400, "invalid_field"),
    ("images-item-object", "/encode", {"json": {"images": [{"url": "http://169.254.169.254/"}]}}, 400, "invalid_field"),
    ("normalize-not-bool", "/encode", {"json": {"texts": ["a"], "normalize": "maybe"}}, 400, "invalid_field"),
    ("space-unknown", "/encode", {"json": {"texts": ["a"], "space": "hyperbolic"}}, 422, "invalid_space"),
    # counts and lengths
    ("100000-texts", "/encode", {"json": {"texts": ["a"] * 100_000}}, 422, "too_many_texts"),
    ("65-images", "/encode", {"json": {"images": [b64(PNG)] * 65}}, 422, "too_many_images"),
    ("text-10001-chars", "/encode", {"json": {"texts": ["x" * 10_001]}}, 422, "text_too_long"),
    ("text-empty", "/encode", {"json": {"texts": [""]}}, 422, "empty_text"),
    ("text-unicode-whitespace", "/encode", {"json": {"texts": ["\u3000\u2003\n\t"]}}, 422, "empty_text"),
    ("no-inputs", "/encode", {"json": {}}, 422, "no_inputs"),
    ("fuse-without-texts", "/fuse", json_images(PNG), 422, "missing_inputs"),
    ("fuse-without-images", "/fuse", {"json": {"texts": ["a"]}}, 422, "missing_inputs"),
    ("top-k-zero", "/caption", json_images(PNG, top_k=0), 422, "invalid_top_k"),
    ("top-k-1001", "/caption", json_images(PNG, top_k=1001), 422, "invalid_top_k"),
    ("top-k-true", "/caption", json_images(PNG, top_k=True), 422, "invalid_top_k"),
    ("top-k-fraction", "/caption", json_images(PNG, top_k=2.5), 422, "invalid_top_k"),
    ("top-k-huge", "/caption", json_images(PNG, top_k=10**40), 422, "invalid_top_k"),
    ("top-k-nan", "/caption", raw(b'{"images": [], "top_k": NaN}'), 422, "invalid_top_k"),
    ("257-candidates", "/caption", json_images(PNG, candidates=["c"] * 257), 422, "too_many_candidates"),
    # content types and multipart
    ("text-plain", "/encode", raw(b"hello", "text/plain"), 415, "unsupported_media_type"),
    ("no-content-type", "/encode", raw(b"hello", None), 415, "unsupported_media_type"),
    ("xml", "/encode", raw(b"<texts><t>a</t></texts>", "application/xml"), 415, "unsupported_media_type"),
    (
        "multipart-invalid-utf8-text",
        "/encode",
        dict(zip(("data", "content_type"), multipart([("text", b"caf\xe9 \xff\xfe", None)]), strict=True)),
        400,
        "invalid_text_encoding",
    ),
    (
        "urlencoded-invalid-utf8",
        "/encode",
        raw(b"text=caf%E9", "application/x-www-form-urlencoded"),
        400,
        "invalid_text_encoding",
    ),
    ("multipart-no-boundary", "/encode", raw(b"--x\r\n", "multipart/form-data"), 400, "invalid_multipart"),
    (
        "multipart-500-parts",
        "/encode",
        dict(zip(("data", "content_type"), multipart([("text", b"a", None)] * 500), strict=True)),
        413,
        "payload_too_large",
    ),
    ("body-over-max-content-length", "/encode", raw(b"x" * (32 * MB + 1)), 413, "payload_too_large"),
    # routing
    ("wrong-method", "/encode", {"method": "GET"}, 405, "method_not_allowed"),
    ("unknown-route", "/../../etc/passwd", {}, 404, "not_found"),
]


def good_request(client) -> None:
    resp = client.post("/encode", json={"images": [b64(PNG)], "texts": ["still fine"]})
    assert resp.status_code == 200, resp.json


@pytest.mark.parametrize(("path", "kwargs", "status", "code"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_input_gets_its_json_error_and_the_next_request_works(client, path, kwargs, status, code):
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "POST")
    resp = client.open(path, method=method, **kwargs)
    assert resp.status_code == status, resp.get_data()[:300]
    assert resp.mimetype == "application/json"
    assert resp.json["error"]["code"] == code
    assert isinstance(resp.json["error"]["message"], str) and resp.json["error"]["message"]
    good_request(client)


def test_the_corpus_is_at_least_thirty_inputs():
    assert len(HOSTILE) >= 30


# -- decompression bombs, with the peak memory of this process measured during the request -----------
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_rss_growth(fn) -> tuple[object, int]:
    """Run fn() while sampling the resident set every millisecond; return its result and the peak growth."""
    before, peak, done = _rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return result, max(peak[0], _rss()) - before


@pytest.fixture(scope="module")
def big_png() -> bytes:
    data = compressible_png(12_000)
    # Complete and valid: every row is there (inflated in bounded chunks to check, never all at once).
    inflater, total, rest = zlib.decompressobj(), 0, data[33 + 8 : -12]
    chunk = inflater.decompress(rest, 8 * MB)
    while chunk:
        total += len(chunk)
        chunk = inflater.decompress(inflater.unconsumed_tail, 8 * MB)
    assert total == 12_000 * 12_001 and len(data) < 1 * MB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.open(io.BytesIO(data)).verify()
    return data


@pytest.mark.parametrize("which", ["header-50000x50000", "valid-12000x12000"])
def test_bombs_are_refused_with_bounded_memory(client, big_png, which):
    data = header_bomb_png() if which.startswith("header") else big_png
    body, content_type = multipart([("image", data, "bomb.png")])
    good_request(client)  # everything lazy is loaded before measuring
    resp, growth = peak_rss_growth(lambda: client.post("/encode", data=body, content_type=content_type))
    assert resp.status_code == 413 and resp.json["error"]["code"] == "image_too_large"
    if which.startswith("valid"):
        assert "12000x12000" in resp.json["error"]["message"]  # our cap, not Pillow's, refused it
    # Decoding would need 144 MB (greyscale) and 432 MB more as RGB.
    assert growth < 40 * MB, f"peak RSS grew by {growth / MB:.0f} MB"
    good_request(client)


def test_pixel_cap_is_configurable(tiny_registry):
    client = create_app({"TESTING": True, "MAX_IMAGE_PIXELS": 1000}, registry=tiny_registry).test_client()
    resp = client.post("/encode", json={"images": [b64(PNG)]})  # 40 x 30 = 1200 pixels
    assert resp.status_code == 413 and "at most 1000" in resp.json["error"]["message"]


# -- odd but valid pictures work ----------------------------------------------------------------
def embed(client, data: bytes) -> np.ndarray:
    resp = client.post("/encode", json={"images": [b64(data)]})
    assert resp.status_code == 200, resp.json
    return np.array(resp.json["image_embeddings"][0])


def _palette_with_transparency() -> bytes:
    image = noise(30, 20).convert("P")
    image.info["transparency"] = 0
    return encode_image(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [noise(32, 32, seed=1).convert("P"), noise(32, 32, seed=2).convert("P")]
    return encode_image(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


ODD_BUT_VALID = {
    "cmyk-jpeg": lambda: encode_image(noise(40, 30, "CMYK"), "JPEG"),
    "16-bit-grey-png": lambda: encode_image(Image.fromarray(rng.integers(0, 65535, (30, 40), dtype=np.uint16)), "PNG"),
    "palette-png": lambda: encode_image(noise(30, 20).convert("P"), "PNG"),
    "palette-transparency-png": _palette_with_transparency,
    "rgba-png": lambda: encode_image(noise(30, 20, "RGBA"), "PNG"),
    "la-png": lambda: encode_image(noise(30, 20, "RGBA").convert("LA"), "PNG"),
    "grey-png": lambda: encode_image(noise(30, 20, "L"), "PNG"),
    "1-bit-png": lambda: encode_image(noise(30, 20, "L").convert("1"), "PNG"),
    "animated-gif": _animated_gif,
    "progressive-jpeg": lambda: encode_image(noise(64, 48), "JPEG", progressive=True),
    "webp": lambda: WEBP,
    "bmp": lambda: encode_image(noise(30, 20), "BMP"),
    "1x1": lambda: encode_image(noise(1, 1), "PNG"),
    "1x10000": lambda: encode_image(noise(1, 10_000), "PNG"),
    "10000x1": lambda: encode_image(noise(10_000, 1), "PNG"),
    "png-with-zip-appended": lambda: PNG + b"PK\x03\x04" + b"\x00" * 26 + b"evil.sh",
}


@pytest.mark.parametrize("name", list(ODD_BUT_VALID))
def test_odd_but_valid_images_work(client, name):
    vector = embed(client, ODD_BUT_VALID[name]())
    assert vector.shape == (16,) and np.isfinite(vector).all()


def test_exif_orientation_is_applied(client):
    base = noise(40, 24, seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    tagged = encode_image(base, "PNG", exif=exif)
    upright = encode_image(base.transpose(Image.Transpose.ROTATE_270), "PNG")
    np.testing.assert_allclose(embed(client, tagged), embed(client, upright), atol=1e-5)
    assert not np.allclose(embed(client, tagged), embed(client, encode_image(base, "PNG")), atol=1e-3)


def test_exif_orientation_of_a_jpeg_is_applied(client):
    # A phone photo: a JPEG stored sideways, with Orientation 6 in its EXIF block.
    y, x = np.mgrid[0:48, 0:80]
    base = Image.fromarray(np.stack([x * 3, y * 5, (x + y) * 2], axis=-1).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    tagged = embed(client, encode_image(base, "JPEG", exif=exif, quality=95))
    upright = embed(client, encode_image(base.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95))
    sideways = embed(client, encode_image(base, "JPEG", quality=95))
    assert np.abs(tagged - upright).max() < np.abs(tagged - sideways).max() / 10


def test_animated_gif_uses_its_first_frame(client):
    animation = Image.open(io.BytesIO(_animated_gif()))
    first = encode_image(animation.convert("RGB"), "PNG")
    animation.seek(1)
    second = encode_image(animation.convert("RGB"), "PNG")
    vector = embed(client, _animated_gif())
    np.testing.assert_allclose(vector, embed(client, first), atol=1e-5)
    assert not np.allclose(vector, embed(client, second), atol=1e-3)


def test_rgba_is_composited_on_white(client):
    transparent = Image.new("RGBA", (30, 20), (255, 0, 0, 0))
    white = Image.new("RGB", (30, 20), (255, 255, 255))
    np.testing.assert_allclose(embed(client, encode_image(transparent)), embed(client, encode_image(white)), atol=1e-5)


@pytest.mark.parametrize(
    "text",
    [
        "tab\there\x00nul\x07bell\x1b[31mred",
        "mixed: cat 猫 кошка قطة 🐈\u200d⬛",
        "\u202eright-to-left override",
        "a" * 10_000,
    ],
)
def test_control_characters_and_mixed_scripts_work(client, text):
    resp = client.post("/encode", json={"texts": [text]})
    assert resp.status_code == 200 and np.isfinite(resp.json["text_embeddings"]).all()


def test_multipart_utf8_text_works(client):
    body, content_type = multipart([("text", "café 猫".encode(), None), ("image", PNG, "a.png")])
    assert client.post("/encode", data=body, content_type=content_type).status_code == 200


def test_unknown_fields_are_ignored(client):
    resp = client.post("/encode", json={"texts": ["a"], "url": "http://169.254.169.254/", "extra": {"x": 1}})
    assert resp.status_code == 200
