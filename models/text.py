"""The served text encoder: tokenizer + compiled Keras encoder -> L2-normalised sentence embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TextEncoder:
    name: str
    architecture: str
    model: object
    tokenizer: object
    dim: int
    max_tokens: int
    preprocessing: str = ""
    weights_sha256: str | None = None
    _fn: object = field(default=None, repr=False)

    def __post_init__(self):
        import tensorflow as tf

        model = self.model
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec])
        def forward(token_ids, attention_mask):
            return model({"token_ids": token_ids, "attention_mask": attention_mask}, training=False)

        self._fn = forward

    def encode(self, texts: list[str]) -> np.ndarray:
        """Texts -> (M, dim) float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        token_ids, mask = self.tokenizer.encode(list(texts))
        return self._fn(token_ids, mask).numpy()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "text",
            "architecture": self.architecture,
            "input_size": [self.max_tokens],
            "output_dim": self.dim,
            "preprocessing": self.preprocessing,
            "weights_sha256": self.weights_sha256,
        }
