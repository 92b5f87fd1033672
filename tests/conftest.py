"""Fixtures: the real app factory over tiny random models, and real photos from the scikit-image wheel."""

from __future__ import annotations

import io
import os
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

from app import create_app
from models.fusion import FusionHead, build_fusion_head
from models.image_encoders import ImageEncoder, build_tiny_image_model, resize_and_center_crop
from models.imagenet import class_names
from models.registry import ModelRegistry
from models.text import TextEncoder
from models.weights import minilm_source_dir


class PeakConcurrency:
    """Counts the callers inside `hold()` at once; `peak` is the most there ever were."""

    def __init__(self):
        self.running = self.peak = 0
        self._lock = threading.Lock()

    def hold(self, seconds: float) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(seconds)
        with self._lock:
            self.running -= 1


TINY_SIZE = 32


def tiny_preprocess(image: Image.Image) -> np.ndarray:
    return resize_and_center_crop(image, TINY_SIZE, TINY_SIZE + 4)


def make_tiny_registry() -> ModelRegistry:
    from models import text_encoder

    image = ImageEncoder("tiny_cnn", "tiny random CNN", build_tiny_image_model(TINY_SIZE, 16), TINY_SIZE, 16,
                         tiny_preprocess, "test only")
    tokenizer = text_encoder.TextTokenizer(os.path.join(minilm_source_dir(), "tokenizer.json"), max_length=64)
    config = text_encoder.TINY_CONFIG
    text = TextEncoder("tiny_bert", "tiny random BERT", text_encoder.build_text_encoder(config), tokenizer,
                       config["hidden_size"], 64)
    head = FusionHead(build_fusion_head(16, config["hidden_size"], hidden=8), 16, config["hidden_size"])
    return ModelRegistry(image, text, head, class_names())


@pytest.fixture(scope="session")
def tiny_registry() -> ModelRegistry:
    registry = make_tiny_registry()
    registry.warmup()
    return registry


@pytest.fixture
def app(tiny_registry):
    return create_app({"TESTING": True}, registry=tiny_registry)


@pytest.fixture
def client(app):
    return app.test_client()


def encode_image(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos shipped inside the scikit-image wheel, as PNG/JPEG bytes."""
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    names = {"chelsea": "chelsea.png", "coffee": "coffee.png", "astronaut": "astronaut.png", "rocket": "rocket.jpg"}
    out = {}
    for key, name in names.items():
        with open(os.path.join(folder, name), "rb") as f:
            out[key] = f.read()
    return out


@pytest.fixture
def png_bytes() -> bytes:
    rng = np.random.default_rng(0)
    return encode_image(Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)))


@pytest.fixture(scope="session")
def model_dir() -> str:
    """MODEL_DIR with the real converted weights (`make test` installs them first)."""
    from config import load_config

    return load_config()["MODEL_DIR"]


@pytest.fixture(scope="session")
def real_registry(model_dir) -> ModelRegistry:
    """The default offline registry on real weights, built once for the session."""
    from config import load_config
    from models.loading import build_registry

    registry = build_registry(load_config())
    registry.warmup()
    return registry


@pytest.fixture(scope="session")
def real_client(real_registry):
    return create_app({"TESTING": True}, registry=real_registry).test_client()
