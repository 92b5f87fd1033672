"""Captions grounded in what the image encoder sees: its top ImageNet classes and their probabilities."""

from __future__ import annotations

# Thresholds on the top class probabilities: a confident single label, a pair, or a hedged list.
CONFIDENT = 0.5
PAIR = 0.5


def with_article(noun: str) -> str:
    """'a tabby cat', 'an espresso' (by the first letter; good enough for ImageNet names)."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def compose_caption(labels: list[tuple[str, float]]) -> str:
    """One English sentence from the top labels, only as certain as the probabilities are."""
    if not labels:
        return "a photo"
    (first, p1), rest = labels[0], labels[1:]
    if p1 >= CONFIDENT or not rest:
        return f"a photo of {with_article(first)}"
    second, p2 = rest[0]
    if p1 + p2 >= PAIR:
        return f"a photo of {with_article(first)} or {with_article(second)}"
    if len(rest) >= 2:
        third = rest[1][0]
        return f"a photo that may show {with_article(first)}, {with_article(second)} or {with_article(third)}"
    return f"a photo that may show {with_article(first)} or {with_article(second)}"


def caption_for(probs, names=None) -> str:
    """The caption for one image's (1000,) class probabilities, with sentence-friendly class names."""
    import numpy as np

    from models.imagenet import caption_names

    names = names or caption_names()
    top = np.argsort(-probs)[:3]
    labels, seen = [], set()
    for j in top:
        if names[j] not in seen:  # two classes can share a readable name ("missile")
            seen.add(names[j])
            labels.append((names[j], float(probs[j])))
    return compose_caption(labels)
