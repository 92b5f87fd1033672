"""Requests -> validated images and texts. Everything here raises ApiError (4xx), never a 500."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flask import Request, current_app

from app.errors import ApiError
from app.images import decode_image

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)


@dataclass
class Payload:
    """The raw parts of a request: image bytes, texts and the other fields (options)."""

    images: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    is_json: bool = False


def _b64(item: Any, index: int) -> bytes:
    if not isinstance(item, str):
        raise ApiError(400, "invalid_field", f"images[{index}] must be a base64 string, got {type(item).__name__}.")
    data = _DATA_URL.sub("", item.strip(), count=1)
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", f"images[{index}] is not valid base64.") from None


def _string_list(body: dict, key: str) -> list:
    value = body.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "invalid_field", f'"{key}" must be a list, got {type(value).__name__}.')
    return value


def read_payload(request: Request) -> Payload:
    """Read a JSON or multipart/form body; 400/415 on anything malformed."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        body = request.get_json(silent=True)
        if body is None:
            raise ApiError(400, "invalid_json", "The body is not valid JSON.")
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_json", "The JSON body must be an object.")
        images = _string_list(body, "images")
        texts = _string_list(body, "texts")
        check_counts(len(images), len(texts))
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ApiError(400, "invalid_field", f"texts[{i}] must be a string, got {type(text).__name__}.")
        return Payload([_b64(item, i) for i, item in enumerate(images)], texts, body, True)
    if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        files = request.files.getlist("image")
        texts = request.form.getlist("text")
        check_counts(len(files), len(texts))
        fields: dict[str, Any] = {key: request.form.get(key) for key in request.form if key != "text"}
        if "candidate" in request.form or "candidates" in request.form:
            fields["candidates"] = request.form.getlist("candidate") + request.form.getlist("candidates")
        return Payload([f.read() for f in files], texts, fields, False)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type must be application/json or multipart/form-data, got {mimetype or 'none'!r}.",
    )


def check_counts(n_images: int, n_texts: int) -> None:
    config = current_app.config
    if n_images > config["MAX_IMAGES"]:
        raise ApiError(422, "too_many_images", f"{n_images} images sent; at most {config['MAX_IMAGES']} per request.")
    if n_texts > config["MAX_TEXTS"]:
        raise ApiError(422, "too_many_texts", f"{n_texts} texts sent; at most {config['MAX_TEXTS']} per request.")


def validate_texts(texts: list[str], what: str = "texts") -> list[str]:
    """Refuse empty, whitespace-only and over-long texts (422)."""
    limit = current_app.config["MAX_TEXT_CHARS"]
    for i, text in enumerate(texts):
        if not text.strip():
            raise ApiError(422, "empty_text", f"{what}[{i}] is empty or only whitespace.")
        if len(text) > limit:
            raise ApiError(422, "text_too_long", f"{what}[{i}] has {len(text)} characters; at most {limit}.")
    return texts


def preprocess_images(images: list[bytes], encoder) -> np.ndarray:
    """Decode and preprocess every image for `encoder`: uint8 (N, S, S, 3)."""
    max_pixels = current_app.config["MAX_IMAGE_PIXELS"]
    size = encoder.input_size
    arrays = []
    for i, data in enumerate(images):
        try:
            image = decode_image(data, max_pixels=max_pixels, min_side=size + size // 7)
        except ApiError as err:
            err.message = f"images[{i}]: {err.message}"
            raise
        arrays.append(encoder.preprocess(image))
    if not arrays:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(arrays)


def get_bool(fields: dict, key: str, default: bool) -> bool:
    value = fields.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ApiError(400, "invalid_field", f'"{key}" must be a boolean, got {value!r}.')


def get_int(fields: dict, key: str, default: int, low: int, high: int) -> int:
    value = fields.get(key, default)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,9}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(422, f"invalid_{key}", f'"{key}" must be an integer from {low} to {high}, got {value!r}.')
    return value


def get_choice(fields: dict, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = fields.get(key, default)
    if value not in choices:
        raise ApiError(422, f"invalid_{key}", f'"{key}" must be one of {", ".join(choices)}, got {value!r}.')
    return value


def get_texts(fields: dict, key: str) -> list[str] | None:
    """An optional list of strings in the options (e.g. caption candidates)."""
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_field", f'"{key}" must be a list of strings.')
    limit = current_app.config["MAX_CANDIDATES"]
    if len(value) > limit:
        raise ApiError(422, f"too_many_{key}", f'{len(value)} "{key}" sent; at most {limit}.')
    return validate_texts(value, key)
