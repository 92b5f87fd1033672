"""A training-free shared image-text space (ConSE, Norouzi et al. 2014).

An image is embedded as the probability-weighted mix of the sentence embeddings of its top
ImageNet classes, so it lands in the text encoder's own space and can be compared with any text.
"""

from __future__ import annotations

import numpy as np

PROMPTS = ("a photo of a {}.", "a picture of a {}.", "{}")


def class_prompts(names: list[str] | tuple[str, ...]) -> list[str]:
    """Every prompt of every class, class-major: len(names) * len(PROMPTS) texts."""
    return [prompt.format(name) for name in names for prompt in PROMPTS]


def class_embeddings(prompt_embeddings: np.ndarray, num_classes: int) -> np.ndarray:
    """Average each class's prompt embeddings and re-normalise: (num_classes, D)."""
    mean = prompt_embeddings.reshape(num_classes, len(PROMPTS), -1).mean(axis=1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)


def conse_embed(probs: np.ndarray, class_embs: np.ndarray, top_k: int = 10) -> np.ndarray:
    """(N, C) class probabilities -> (N, D) unit vectors in the text space."""
    top = np.argsort(-probs, axis=1)[:, :top_k]
    weights = np.take_along_axis(probs, top, axis=1)
    weights = weights / weights.sum(axis=1, keepdims=True).clip(1e-12)
    mixed = np.einsum("nk,nkd->nd", weights, class_embs[top])
    return mixed / np.linalg.norm(mixed, axis=1, keepdims=True).clip(1e-12)
