"""Training the fusion head: the seed's compile/fit loop on cached encoder outputs, with honest metrics.

The trainer works on arrays (image features, text embeddings, labels, groups), so the command for user
data (`python -m models.train_fusion`) and the default head's builder share it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.fusion import DEFAULT_HIDDEN, build_fusion_head


@dataclass
class HyperParameters:
    epochs: int = 10
    batch_size: int = 64
    val_split: float = 0.2
    learning_rate: float = 1e-3
    seed: int = 0
    hidden: int = DEFAULT_HIDDEN
    dropout: float = 0.2


def teacher_weights(image_encoder, text_encoder, cache_dir: str | None = None) -> tuple[np.ndarray, ...]:
    """The head's starting point: the image encoder's ImageNet classifier and the class names' embeddings."""
    from models import bridge
    from models.imagenet import class_synonyms

    kernel, bias = classifier_weights(image_encoder.model)
    if cache_dir:
        return kernel, bias, bridge.cached_class_embeddings(text_encoder, class_synonyms(), cache_dir)
    return kernel, bias, bridge.embed_classes(text_encoder, class_synonyms())


def classifier_weights(model) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (F, C), bias (C,)) of the last Dense layer of an image encoder, searched through nesting."""
    import keras

    def dense_layers(layer):
        if isinstance(layer, keras.layers.Dense):
            yield layer
        for sub in getattr(layer, "layers", []):
            yield from dense_layers(sub)

    last = list(dense_layers(model))[-1]
    kernel, bias = (np.asarray(w) for w in last.get_weights())
    return kernel.astype(np.float32), bias.astype(np.float32)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC-AUC (Mann-Whitney U with tied ranks averaged); nan when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = np.asarray(scores)[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def split_by_group(groups: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation row indices with no group (image) on both sides."""
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(unique)
    n_val = max(1, round(len(unique) * val_split)) if len(unique) > 1 else 0
    val_groups = set(unique[:n_val].tolist())
    is_val = np.array([g in val_groups for g in groups.tolist()])
    if not is_val.any():  # one image only: fall back to a split of rows
        is_val = rng.random(len(groups)) < val_split
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def train_head(image_features: np.ndarray, text_embeddings: np.ndarray, labels: np.ndarray, groups: np.ndarray,
               params: HyperParameters, verbose: int = 1, teacher: tuple | None = None,
               ) -> tuple[Any, dict[str, list[float]], dict[str, float]]:
    """compile + fit a fresh head; returns (model, per-epoch history, final validation metrics)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    labels = labels.astype(np.float32)
    train_idx, val_idx = split_by_group(np.asarray(groups), params.val_split, params.seed)
    model = build_fusion_head(image_features.shape[1], text_embeddings.shape[1], params.hidden, params.dropout,
                              params.seed, teacher=teacher, num_classes=teacher[1].shape[0] if teacher else 1000)
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc", num_thresholds=500)],
    )
    x_train = [image_features[train_idx], text_embeddings[train_idx]]
    x_val = [image_features[val_idx], text_embeddings[val_idx]]
    fit = model.fit(x_train, labels[train_idx], validation_data=(x_val, labels[val_idx]) if len(val_idx) else None,
                    epochs=params.epochs, batch_size=params.batch_size, shuffle=True, verbose=verbose)
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    scores = model.predict(x_val, batch_size=1024, verbose=0).ravel() if len(val_idx) else np.zeros(0)
    val_labels = labels[val_idx]
    metrics = {
        "val_loss": history.get("val_loss", [float("nan")])[-1],
        "val_accuracy": float(((scores >= 0.5) == (val_labels >= 0.5)).mean()) if len(val_idx) else float("nan"),
        "val_roc_auc": roc_auc(val_labels, scores),
        "train_loss": history["loss"][-1],
        "train_rows": int(len(train_idx)),
        "val_rows": int(len(val_idx)),
        "val_positives": int(val_labels.sum()),
    }
    return model, history, metrics


def plot_learning_curve(history: dict[str, list[float]], path: str, title: str = "fusion head") -> None:
    """Train/validation loss and AUC per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key, label in ((ax_loss, "loss", "binary cross-entropy"), (ax_auc, "auc", "ROC-AUC")):
        ax.plot(epochs, history[key], "o-", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_auc.set_ylim(top=1.0)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(out_dir: str, model, history: dict, metrics: dict, manifest: dict[str, Any]) -> dict[str, str]:
    """head.keras + manifest.json (via heads.save_head), metrics.json and learning_curve.png."""
    from models.heads import save_head

    os.makedirs(out_dir, exist_ok=True)
    manifest = dict(manifest, metrics=metrics, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    head_path = save_head(out_dir, model, manifest)
    metrics_path = os.path.join(out_dir, "metrics.json")
    with open(metrics_path, "w", encoding="utf-8") as f:
        json.dump({"final": metrics, "history": history}, f, indent=2)
    curve_path = os.path.join(out_dir, "learning_curve.png")
    plot_learning_curve(history, curve_path, manifest.get("name", "fusion head"))
    return {"head": head_path, "metrics": metrics_path, "learning_curve": curve_path}
