"""The served text encoder: tokenizer + compiled Keras encoder -> L2-normalised sentence embeddings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.image_encoders import BATCH_BUCKETS, batch_buckets, pad_rows


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
    buckets: tuple[int, ...] = BATCH_BUCKETS
    _fn: object = field(default=None, repr=False)

    def __post_init__(self):
        import tensorflow as tf

        model = self.model
        # One shape-polymorphic graph (traced once); rows are padded to `buckets` and the tokenizer pads
        # lengths to its own buckets, so only a few shapes ever reach the kernels.
        spec = tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[spec, spec])
        def forward(token_ids, attention_mask):
            return model({"token_ids": token_ids, "attention_mask": attention_mask}, training=False)

        self._fn = forward

    def set_max_batch_size(self, max_batch_size: int) -> None:
        self.buckets = batch_buckets(max_batch_size)

    def warmup(self) -> None:
        """Trace the graph and run it once per row bucket."""
        for bucket in self.buckets:
            self.encode(["warm-up"] * bucket)

    def tracing_count(self) -> int:
        return self._fn.experimental_get_tracing_count()

    def encode(self, texts: list[str]) -> np.ndarray:
        """Texts, any number of them (run in batches of at most the largest bucket) -> (M, dim) float32 unit vectors."""
        texts, n, largest = list(texts), len(texts), self.buckets[-1]
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        if n > largest:
            return np.concatenate([self.encode(texts[i : i + largest]) for i in range(0, n, largest)])
        bucket = next(b for b in self.buckets if b >= n)
        token_ids, mask = self.tokenizer.encode(texts)
        return self._fn(pad_rows(token_ids, bucket), pad_rows(mask, bucket)).numpy()[:n]

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
