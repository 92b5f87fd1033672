"""Saving and loading trained fusion heads, refusing one trained against other encoders."""

from __future__ import annotations

import json
import os
from typing import Any

from models.fusion import FusionHead
from models.weights import WeightsError, sha256_file

HEAD_FILE = "head.keras"
MANIFEST_FILE = "manifest.json"


def encoder_identity(image, text) -> dict[str, Any]:
    """What a head is bound to: the exact encoders (name + weights hash) whose outputs it reads."""
    return {
        "image": {"name": image.name, "weights_sha256": image.weights_sha256, "dim": image.feature_dim},
        "text": {"name": text.name, "weights_sha256": text.weights_sha256, "dim": text.dim},
    }


def save_head(directory: str, model, manifest: dict[str, Any]) -> str:
    """Write head.keras and manifest.json (with the head's own sha256) into `directory`."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, HEAD_FILE)
    model.save(path)
    manifest = dict(manifest, file=HEAD_FILE, sha256=sha256_file(path))
    with open(os.path.join(directory, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    return path


def load_head(directory: str, image, text) -> FusionHead:
    """Load a trained head; WeightsError if it is missing, altered, or bound to other encoders."""
    import keras

    manifest_path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        raise WeightsError(f"No fusion head manifest at {manifest_path}: train one with `make train-default-head`.")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    path = os.path.join(directory, manifest.get("file", HEAD_FILE))
    if not os.path.isfile(path) or sha256_file(path) != manifest.get("sha256"):
        raise WeightsError(f"{path} is missing or does not match its manifest's sha256: train the head again.")
    bound, have = manifest.get("encoders", {}), encoder_identity(image, text)
    for kind in ("image", "text"):
        want = bound.get(kind, {})
        if (want.get("name"), want.get("weights_sha256")) != (have[kind]["name"], have[kind]["weights_sha256"]):
            raise WeightsError(
                f"The fusion head in {directory} was trained against the {kind} encoder {want.get('name')} "
                f"(weights {str(want.get('weights_sha256'))[:12]}), but this server runs {have[kind]['name']} "
                f"(weights {str(have[kind]['weights_sha256'])[:12]}): train a head for it or set FUSION_HEAD."
            )
    model = keras.saving.load_model(path, compile=False)
    return FusionHead(model, image.feature_dim, text.dim, name=manifest.get("name", "fusion_head"),
                      weights_sha256=manifest["sha256"], trained=True, manifest=manifest)
