"""POST /caption: top ImageNet labels, a grounded caption, and optional ranking of candidate texts."""

import numpy as np
from flask import Blueprint, request

from app import inputs
from app.errors import ApiError
from app.registry import current_registry
from models.captions import caption_for

bp = Blueprint("caption", __name__)


@bp.post("/caption")
def caption():
    payload = inputs.read_payload(request)
    top_k = inputs.get_int(payload.fields, "top_k", 5, 1, 1000)
    candidates = inputs.get_texts(payload.fields, "candidates")
    if not payload.images:
        raise ApiError(422, "missing_inputs", "/caption needs at least one image.")
    registry = current_registry()
    pixels = inputs.preprocess_images(payload.images, registry.image_encoder)
    images = registry.encode_images(pixels)
    names = registry.class_names
    ranked_scores = None
    if candidates:
        candidate_embeddings = registry.encode_texts(candidates)
        ranked_scores = registry.shared_image_embeddings(images.probs) @ candidate_embeddings.T
    captions = []
    for i, probs in enumerate(images.probs):
        top = np.argsort(-probs)[:top_k]
        labels = [{"label": names[j], "score": float(probs[j])} for j in top]
        item = {"caption": caption_for(probs), "labels": labels}
        if ranked_scores is not None:
            order = np.argsort(-ranked_scores[i], kind="stable")
            item["ranked"] = [{"text": candidates[j], "score": float(ranked_scores[i, j])} for j in order]
            item["ranked_by"] = "similarity"
        captions.append(item)
    return {"captions": captions}
