"""Requests -> validated images, texts and options. Everything here raises ApiError (4xx), never a 500.

The body is validated with the pydantic models of app/schemas.py (the same ones /openapi.json is built from);
the limits that come from configuration (counts, characters, pixels) are checked here.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flask import Request, current_app, g
from pydantic import BaseModel, ValidationError

from app.errors import ApiError
from app.images import decode_and_preprocess

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,", re.ASCII)
# Options whose bad values are "well-formed but out of range" (422); other type errors are a 400.
_RANGE_FIELDS = ("top_k", "space")


@dataclass
class Payload:
    """The raw parts of a request: image bytes, texts and the validated options."""

    images: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    is_json: bool = False


def _b64(item: str, index: int) -> bytes:
    data = _DATA_URL.sub("", item.strip(), count=1)
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", f"images[{index}] is not valid base64.") from None


def _validation_error(err: ValidationError) -> ApiError:
    first = err.errors(include_url=False)[0]
    loc = first.get("loc") or ()
    if first["type"] == "json_invalid":
        return ApiError(400, "invalid_json", f"The body is not valid JSON: {first['msg']}.")
    if not loc:
        return ApiError(400, "invalid_json", "The JSON body must be an object.")
    where = str(loc[0]) + "".join(f"[{part}]" for part in loc[1:])
    received = repr(first.get("input"))
    received = received if len(received) <= 60 else received[:57] + "..."
    message = f'"{where}": {first["msg"]}, got {received}.'
    if loc[0] in _RANGE_FIELDS and len(loc) == 1:
        return ApiError(422, f"invalid_{loc[0]}", message)
    return ApiError(400, "invalid_field", message)


def _validate(model: type[BaseModel], data: Any, *, json: bool) -> dict[str, Any]:
    try:
        parsed = model.model_validate_json(data) if json else model.model_validate(data)
    except ValidationError as err:
        raise _validation_error(err) from None
    return parsed.model_dump()


def read_payload(request: Request, json_model: type[BaseModel], form_model: type[BaseModel]) -> Payload:
    """Read and validate a JSON or multipart/form body; 400/413/415/422 on anything malformed."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        body = _validate(json_model, request.get_data(cache=False), json=True)
        images, texts = body.pop("images") or [], body.pop("texts", None) or []
        check_counts(len(images), len(texts))
        return Payload([_b64(item, i) for i, item in enumerate(images)], texts, body, True)
    if mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        files, form = request.files, request.form  # strict UTF-8, see app/forms.py
        image_parts = files.getlist("image")
        check_counts(len(image_parts), len(form.getlist("text")))
        raw: dict[str, Any] = {key: form.get(key) for key in form}
        for key in ("text", "candidate", "candidates"):
            if key in form:
                raw[key] = form.getlist(key)
        raw["image"] = [part.read() for part in image_parts]
        body = _validate(form_model, raw, json=False)
        images, texts = body.pop("image") or [], body.pop("text", None) or []
        if "candidate" in body:
            merged = (body.pop("candidate") or []) + (body.get("candidates") or [])
            body["candidates"] = merged or None
        return Payload(images, texts, body, False)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type must be application/json or multipart/form-data, got {mimetype or 'none'!r}.",
    )


def check_counts(n_images: int, n_texts: int) -> None:
    config = current_app.config
    g.n_images, g.n_texts = n_images, n_texts
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


def validate_candidates(candidates: list[str] | None) -> list[str] | None:
    """Optional texts to rank (e.g. caption candidates): the same rules as texts, and their own count cap."""
    if candidates is None:
        return None
    limit = current_app.config["MAX_CANDIDATES"]
    if len(candidates) > limit:
        raise ApiError(422, "too_many_candidates", f'{len(candidates)} "candidates" sent; at most {limit}.')
    return validate_texts(candidates, "candidates")


def preprocess_images(images: list[bytes], encoder) -> np.ndarray:
    """Decode and preprocess every image for `encoder`: uint8 (N, S, S, 3)."""
    max_pixels = current_app.config["MAX_IMAGE_PIXELS"]
    size = encoder.input_size
    arrays = []
    for i, data in enumerate(images):
        try:
            arrays.append(decode_and_preprocess(data, max_pixels=max_pixels, min_side=size + size // 7,
                                                preprocess=encoder.preprocess))
        except ApiError as err:
            err.message = f"images[{i}]: {err.message}"
            raise
    if not arrays:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(arrays)
