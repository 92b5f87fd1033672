"""The server with its image model taken out: what a request costs around the forward pass.

bench.run starts gunicorn with MODEL_REGISTRY=bench.no_model:make_registry and the project's defaults. Every
request then goes through everything the real server does (HTTP, Flask, multipart parsing, JPEG decode,
the encoder's own resize and crop, the batcher, the JSON answer), except that the image batches come back at
once as constant rows. Its CPU time per request and its latency, added to the bare model's, bound what the
real server can reach on this machine.
"""

from __future__ import annotations

import numpy as np


class WithoutModel:
    """An image encoder's interface and preprocessing, with a forward pass that costs nothing."""

    def __init__(self, encoder):
        self._encoder = encoder

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)

    def warmup(self) -> None:
        """Nothing to trace."""

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(pixels)
        features = np.ones((n, self._encoder.feature_dim), np.float32)
        probs = np.full((n, self._encoder.num_classes), 1 / self._encoder.num_classes, np.float32)
        return features, probs


def without_image_model(registry):
    """`registry` (not yet warm) with its image encoder's forward pass replaced by WithoutModel's."""
    registry.image_encoder = WithoutModel(registry.image_encoder)
    return registry


def make_registry():
    """The worker's registry as the server builds it from the environment, without the image model."""
    from config import load_config
    from models.loading import build_worker_registry

    return without_image_model(build_worker_registry(load_config()))
