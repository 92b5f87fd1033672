"""The evaluation set: real photos from installed wheels with hand-written true and false captions."""

from __future__ import annotations

import importlib
import json
import os

_FOLDERS = {
    "skimage": ("skimage", "data"),
    "sklearn": ("sklearn", os.path.join("datasets", "images")),
    "matplotlib": ("matplotlib", os.path.join("mpl-data", "sample_data")),
}


def photo_path(package: str, name: str) -> str:
    """Where a photo shipped inside an installed wheel lies."""
    module, sub = _FOLDERS[package]
    return os.path.join(os.path.dirname(importlib.import_module(module).__file__), sub, name)


def load_eval_set() -> list[dict]:
    """Each photo with its path, its bytes, and its true and false captions."""
    with open(os.path.join(os.path.dirname(__file__), "photos.json"), encoding="utf-8") as f:
        photos = json.load(f)["photos"]
    for photo in photos:
        photo["path"] = photo_path(photo["package"], photo["file"])
        with open(photo["path"], "rb") as f:
            photo["bytes"] = f.read()
    return photos
