"""POST /caption: top ImageNet labels, a grounded caption, and optional ranking of candidate texts."""

import numpy as np
from flask import Blueprint, jsonify, request

from app import inputs
from app.errors import ApiError
from app.openapi import POST_ERRORS, documented
from app.registry import current_registry
from app.schemas import CaptionForm, CaptionJson, CaptionResponse
from models.captions import caption_for

bp = Blueprint("caption", __name__)


@bp.post("/caption")
@documented(ok=CaptionResponse, errors=POST_ERRORS, json=CaptionJson, form=CaptionForm)
def caption():
    """Top ImageNet labels and a caption per image; optionally rank candidate texts against each image."""
    payload = inputs.read_payload(request, CaptionJson, CaptionForm)
    top_k = payload.fields["top_k"]
    candidates = inputs.validate_candidates(payload.fields.get("candidates"))
    if not payload.images:
        raise ApiError(422, "missing_inputs", "/caption needs at least one image.")
    registry = current_registry()
    pixels = inputs.preprocess_images(payload.images, registry.image_encoder)
    images = registry.encode_images(pixels)
    names = registry.class_names
    ranked_scores, ranked_by = None, None
    if candidates:
        candidate_embeddings = registry.encode_texts(candidates)
        # The trained head ranks true captions first more often than the shared-space cosine (README).
        if registry.fusion_head.trained:
            ranked_scores, ranked_by = registry.match(images.features, candidate_embeddings), "match"
        else:
            ranked_scores = registry.shared_image_embeddings(images.probs) @ candidate_embeddings.T
            ranked_by = "similarity"
    captions = []
    for i, probs in enumerate(images.probs):
        top = np.argsort(-probs)[:top_k]
        labels = [{"label": names[j], "score": float(probs[j])} for j in top]
        item = {"caption": caption_for(probs), "labels": labels}
        if ranked_scores is not None:
            order = np.argsort(-ranked_scores[i], kind="stable")
            item["ranked"] = [{"text": candidates[j], "score": float(ranked_scores[i, j])} for j in order]
            item["ranked_by"] = ranked_by
        captions.append(item)
    return jsonify({"captions": captions})
