"""Image encoders: a Keras network (uint8-range RGB in, features + ImageNet logits out) and its preprocessing.

Every encoder's model takes float32 RGB pixels in [0, 255], shape (N, S, S, 3), does its own
normalisation in the graph, and returns {"features": (N, F), "logits": (N, 1000)}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

RESNET50_MEAN_BGR = (103.939, 116.779, 123.68)
# Batches are padded up to one of these sizes, so the compiled forward pass sees a handful of shapes.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
# Resizing by more than twice this factor first box-reduces by an integer factor (Pillow's reducing_gap):
# a 12 MP crop to 224 in 7 ms instead of 39, mean difference 0.16 of 255.
REDUCING_GAP = 3.0


def served_outputs(model, pixels) -> dict:
    """The served forward pass, as TensorFlow traces it and ONNX export converts it: uint8 pixels in,
    {"features", "probs"} (the classifier's softmax) out."""
    import tensorflow as tf

    out = model(tf.cast(pixels, tf.float32), training=False)
    return {"features": out["features"], "probs": tf.nn.softmax(out["logits"], axis=-1)}


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below `max_batch_size`, then `max_batch_size` itself: (1, 2, 4, 8, 12) for 12."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    return tuple(b for b in BATCH_BUCKETS if b < max_batch_size) + (max_batch_size,)


def pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    """`array` with its first row repeated at the end until it has `size` rows."""
    if len(array) == size:
        return array
    return np.concatenate([array, np.repeat(array[:1], size - len(array), axis=0)])


def resize_and_center_crop(image: Image.Image, size: int, resize_to: int, resample=Image.BILINEAR) -> np.ndarray:
    """Resize the shorter side to `resize_to`, crop the central `size` square: uint8 (size, size, 3)."""
    width, height = image.size
    scale = resize_to / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), resample=resample, reducing_gap=REDUCING_GAP)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def resnet50_preprocess(image: Image.Image) -> np.ndarray:
    """ResNet50: shorter side to 256 (bilinear), centre crop 224; BGR mean subtraction happens in-graph."""
    return resize_and_center_crop(image, 224, 256, Image.BILINEAR)


def build_resnet50_base():
    """keras.applications.ResNet50 with its 1000-class top and logits out (weights loaded separately)."""
    import keras

    return keras.applications.ResNet50(include_top=True, weights=None, classifier_activation=None)


def wrap_resnet50(base):
    """The served ResNet50: RGB [0, 255] in, caffe-style BGR mean subtraction, features + logits out."""
    import keras

    inputs = keras.Input((224, 224, 3), dtype="float32", name="pixels")
    x = keras.layers.Lambda(lambda t: t[..., ::-1] - np.array(RESNET50_MEAN_BGR, "float32"), name="caffe_preprocess")(
        inputs
    )
    trunk = keras.Model(base.input, {"features": base.get_layer("avg_pool").output, "logits": base.output})
    outputs = trunk(x)
    return keras.Model(inputs, {"features": outputs["features"], "logits": outputs["logits"]}, name="resnet50")


def build_tiny_image_model(input_size: int = 32, feature_dim: int = 16, num_classes: int = 1000, seed: int = 0):
    """A small random CNN with the encoders' contract, for fast tests."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(feature_dim, 3, strides=2, activation="relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(features)
    return keras.Model(inputs, {"features": features, "logits": logits}, name="tiny_cnn")


@dataclass
class ImageEncoder:
    """A served image encoder: one compiled forward pass gives features and class probabilities."""

    name: str
    architecture: str
    model: object
    input_size: int
    feature_dim: int
    preprocess: Callable[[Image.Image], np.ndarray]
    preprocessing: str
    weights_sha256: str | None = None
    num_classes: int = 1000
    buckets: tuple[int, ...] = BATCH_BUCKETS
    _fn: object = field(default=None, repr=False)
    _concrete: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        import tensorflow as tf

        model = self.model

        # No input signature: one fixed-shape graph per bucket, all traced by warmup().
        @tf.function(reduce_retracing=False)
        def forward(pixels):
            out = served_outputs(model, pixels)
            return out["features"], out["probs"]

        self._fn = forward

    def set_max_batch_size(self, max_batch_size: int) -> None:
        self.buckets = batch_buckets(max_batch_size)

    def warmup(self) -> None:
        """Trace and run the graph once per bucket size."""
        import tensorflow as tf

        size = self.input_size
        for bucket in self.buckets:
            # Calling the traced graph directly skips tf.function's per-call signature matching (~0.8 ms).
            spec = tf.TensorSpec([bucket, size, size, 3], tf.uint8)
            self._concrete[bucket] = self._fn.get_concrete_function(spec)
            self(np.zeros((bucket, size, size, 3), np.uint8))

    def tracing_count(self) -> int:
        return self._fn.experimental_get_tracing_count()

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, S, S, 3) -> (features (N, F), probabilities (N, 1000)) as float32 NumPy."""
        n, largest = len(pixels), self.buckets[-1]
        if n > largest:
            parts = [self(pixels[i : i + largest]) for i in range(0, n, largest)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if n == 0:
            return np.zeros((0, self.feature_dim), np.float32), np.zeros((0, self.num_classes), np.float32)
        return self._forward(pixels)

    def _forward(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass over 1..max-bucket rows: padded to the next bucket, through its compiled graph."""
        n = len(pixels)
        bucket = next(b for b in self.buckets if b >= n)
        forward = self._concrete.get(bucket, self._fn)
        features, probs = forward(pad_rows(np.ascontiguousarray(pixels, np.uint8), bucket))
        return features.numpy()[:n], probs.numpy()[:n]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "image",
            "architecture": self.architecture,
            "input_size": [self.input_size, self.input_size, 3],
            "output_dim": self.feature_dim,
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing,
            "weights_sha256": self.weights_sha256,
            "runtime": "tensorflow",
        }
