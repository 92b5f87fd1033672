"""The model registry: every model one worker serves, built after the fork and warmed before use."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models import bridge
from models.batching import Batcher, BatchSettings
from models.fusion import FusionHead
from models.image_encoders import ImageEncoder

log = logging.getLogger(__name__)


@dataclass
class ImageResult:
    features: np.ndarray  # (N, F) raw pooled CNN features
    probs: np.ndarray  # (N, 1000) ImageNet class probabilities


class ModelRegistry:
    """Image encoder, text encoder, fusion head and the shared-space bridge of one worker."""

    def __init__(
        self,
        image_encoder: ImageEncoder,
        text_encoder,
        fusion_head: FusionHead,
        class_names,
        batching: BatchSettings | None = None,
        class_synonyms=None,
    ):
        if fusion_head.image_dim != image_encoder.feature_dim or fusion_head.text_dim != text_encoder.dim:
            raise ValueError(
                f"fusion head expects image/text dims {fusion_head.image_dim}/{fusion_head.text_dim}, "
                f"encoders give {image_encoder.feature_dim}/{text_encoder.dim}"
            )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.fusion_head = fusion_head
        self.class_names = tuple(class_names)
        # What the shared space embeds per class: its synonyms when given, else its one name.
        self.class_synonyms = tuple(class_synonyms) if class_synonyms is not None else self.class_names
        self.class_embeddings: np.ndarray | None = None
        self.warm = False
        self.batching = batching
        self.image_batcher: Batcher | None = None
        self.text_batcher: Batcher | None = None

    # -- forward passes -------------------------------------------------------------------------
    def encode_images(self, pixels: np.ndarray) -> ImageResult:
        """uint8 (N, S, S, 3) preprocessed pixels -> features and class probabilities.

        Once warm, the rows join other requests' in the image batcher (QueueFullError when it is full).
        """
        batcher = self.image_batcher  # read once: close() may clear it meanwhile
        if len(pixels) and batcher is not None:
            features, probs = batcher.submit(pixels, self._timeout())
        else:
            features, probs = self.image_encoder(pixels)
        return ImageResult(features, probs)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (M, D) L2-normalised sentence embeddings (batched with other requests' once warm)."""
        batcher = self.text_batcher
        if texts and batcher is not None:
            return batcher.submit(list(texts), self._timeout())
        return self.text_encoder.encode(texts)

    def _timeout(self) -> float | None:
        return self.batching.request_timeout_s if self.batching and self.batching.request_timeout_s > 0 else None

    def shared_image_embeddings(self, probs: np.ndarray) -> np.ndarray:
        """Images in the text encoder's space (ConSE over the top ImageNet classes)."""
        return bridge.conse_embed(probs, self.class_embeddings)

    def match(self, image_features: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """(N, M) fusion-head probabilities."""
        return self.fusion_head(image_features, text_embeddings)

    # -- lifecycle ------------------------------------------------------------------------------
    def warmup(self) -> None:
        """Trace every compiled call (each batch bucket) and embed the class prompts, then start the batchers.

        Runs in the worker, after the fork: the batchers' loop threads must not exist in the gunicorn master.
        """
        started = time.perf_counter()
        if self.batching is None:
            from config import load_config  # the worker's environment, as create_app() reads it

            self.batching = BatchSettings.from_config(load_config())
        settings = self.batching
        for encoder in (self.image_encoder, self.text_encoder):
            if hasattr(encoder, "set_max_batch_size"):
                encoder.set_max_batch_size(settings.max_batch_size)
            if hasattr(encoder, "warmup"):
                encoder.warmup()
        size = self.image_encoder.input_size
        result = self.image_encoder(np.zeros((1, size, size, 3), np.uint8))
        self.match(result[0], self.text_encoder.encode(["warm-up"]))
        if self.class_embeddings is None:  # build_registry hands in a cached copy
            self.class_embeddings = bridge.embed_classes(self.text_encoder, self.class_synonyms)
        self.start_batchers()
        self.warm = True
        log.info("models warmed up in %.1f s", time.perf_counter() - started)

    def start_batchers(self) -> None:
        """One loop thread per model: images (features and probs in one pass) and texts."""
        settings = self.batching or BatchSettings()
        if self.image_batcher is None:
            self.image_batcher = Batcher(
                self.image_encoder, name="image", max_batch_size=settings.max_batch_size,
                timeout_ms=settings.timeout_ms, max_queue=settings.max_queue, concurrency=settings.concurrency,
            ).start()
        if self.text_batcher is None:
            self.text_batcher = Batcher(
                self.text_encoder.encode, name="text", max_batch_size=settings.max_batch_size,
                timeout_ms=settings.timeout_ms, max_queue=settings.max_text_queue, concurrency=settings.concurrency,
            ).start()

    def close(self) -> None:
        """Stop the batchers: queued callers get BatcherClosedError, the pass in flight finishes."""
        for batcher in (self.image_batcher, self.text_batcher):
            if batcher is not None:
                batcher.close()
        self.image_batcher = self.text_batcher = None

    def describe(self) -> list[dict]:
        return [self.image_encoder.describe(), self.text_encoder.describe(), self.fusion_head.describe()]


class RegistryLoader:
    """Builds and warms a registry in a background thread so /readyz can say 'loading' meanwhile."""

    def __init__(self, factory: Callable[[], ModelRegistry]):
        self._factory = factory
        self._registry: ModelRegistry | None = None
        self.error: str | None = None
        self.started_at = time.time()
        self.ready_at: float | None = None
        self._done = threading.Event()

    @classmethod
    def ready(cls, registry: ModelRegistry) -> RegistryLoader:
        """A loader around an already built registry (warmed here if it is not yet)."""
        loader = cls(lambda: registry)
        loader._load()
        return loader

    def start(self) -> RegistryLoader:
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()
        return self

    def _load(self) -> None:
        try:
            registry = self._factory()
            if not registry.warm:
                registry.warmup()
            self._registry = registry
            self.ready_at = time.time()
        except Exception as exc:  # noqa: BLE001 - reported through /readyz and the log
            self.error = str(exc) or type(exc).__name__
            log.critical("model loading failed: %s", self.error, exc_info=True)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def status(self) -> str:
        if self._registry is not None:
            return "ready"
        return "failed" if self.error else "loading"

    @property
    def registry(self) -> ModelRegistry | None:
        return self._registry

    def close(self) -> None:
        """Stop the registry's batchers (worker exit); a no-op while loading or after a failure."""
        if self._registry is not None:
            self._registry.close()
