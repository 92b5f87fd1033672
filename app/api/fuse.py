"""POST /fuse: how well each text matches each image."""

import numpy as np
from flask import Blueprint, jsonify, request

from app import inputs
from app.errors import ApiError
from app.openapi import POST_ERRORS, documented
from app.registry import current_registry
from app.schemas import FuseForm, FuseJson, FuseResponse

bp = Blueprint("fuse", __name__)


@bp.post("/fuse")
@documented(ok=FuseResponse, errors=POST_ERRORS, json=FuseJson, form=FuseForm)
def fuse():
    """Fusion-head match probability and shared-space similarity of every (image, text) pair."""
    payload = inputs.read_payload(request, FuseJson, FuseForm)
    texts = inputs.validate_texts(payload.texts)
    if not payload.images or not texts:
        raise ApiError(422, "missing_inputs", "/fuse needs at least one image and one text.")
    registry = current_registry()
    pixels = inputs.preprocess_images(payload.images, registry.image_encoder)
    images = registry.encode_images(pixels)
    text_embeddings = registry.encode_texts(texts)
    similarity = registry.shared_image_embeddings(images.probs) @ text_embeddings.T
    # A Response, not a dict: spectree would walk every float of a dict (~1.6 ms a request).
    return jsonify({
        "match": np.ascontiguousarray(registry.match(images.features, text_embeddings), np.float32),
        "similarity": np.ascontiguousarray(similarity, np.float32),
    })
