"""The fusion head: concat(image features, text embedding) -> Dense -> sigmoid match probability."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_HIDDEN = 256


def build_fusion_head(image_dim: int, text_dim: int, hidden: int = DEFAULT_HIDDEN, dropout: float = 0.2, seed: int = 0,
                      teacher: tuple | None = None, num_classes: int = 1000):
    """Keras model: inputs (image_features (N, image_dim), text_embedding (N, text_dim)) -> (N, 1) in [0, 1].

    The image side is mapped into the text space through the ImageNet classes (logits -> softmax ->
    a mix of class-name embeddings, as ConSE does); `teacher` = (classifier kernel (F, C), bias (C,),
    class embeddings (C, D)) starts those layers from the real classifier and class names, else they
    start random. Then concat(projected image, text, their product, their difference) -> dense ->
    sigmoid: a plain concat -> dense head cannot learn a similarity from little data, the product
    term hands it one.
    """
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((image_dim,), name="image_features")
    text = keras.Input((text_dim,), name="text_embedding")
    class_logits = keras.layers.Dense(num_classes, name="class_logits")
    class_mix = keras.layers.Dense(text_dim, use_bias=False, name="class_embeddings")
    probs = keras.layers.Softmax(name="class_probs")(class_logits(image))
    projected = keras.layers.UnitNormalization(name="projection_l2")(class_mix(probs))
    text_unit = keras.layers.UnitNormalization(name="text_l2")(text)
    product = keras.layers.Multiply(name="product")([projected, text_unit])
    difference = keras.layers.Subtract(name="difference")([projected, text_unit])
    x = keras.layers.Concatenate(name="concat")([projected, text_unit, product, difference])
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="match")(x)
    model = keras.Model([image, text], out, name="fusion_head")
    if teacher is not None:
        kernel, bias, class_embeddings = teacher
        class_logits.set_weights([kernel, bias])
        class_mix.set_weights([class_embeddings])
        # Frozen: with the little data a head is trained on, 1.7 M free weights only memorise it.
        class_logits.trainable = class_mix.trainable = False
    return model


@dataclass
class FusionHead:
    """A served fusion head, compiled once; scores every image against every text."""

    model: object
    image_dim: int
    text_dim: int
    name: str = "fusion_head"
    weights_sha256: str | None = None
    trained: bool = False
    manifest: dict | None = None
    _fn: object = field(default=None, repr=False)

    def __post_init__(self):
        import tensorflow as tf

        model = self.model

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, self.image_dim], tf.float32),
                tf.TensorSpec([None, self.text_dim], tf.float32),
            ]
        )
        def grid(image_features, text_embeddings):
            n, m = tf.shape(image_features)[0], tf.shape(text_embeddings)[0]
            images = tf.repeat(image_features, m, axis=0)
            texts = tf.tile(text_embeddings, [n, 1])
            return tf.reshape(model([images, texts], training=False), [n, m])

        self._fn = grid

    def __call__(self, image_features: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """(N, F) x (M, D) -> (N, M) match probabilities."""
        return self._fn(image_features.astype(np.float32), text_embeddings.astype(np.float32)).numpy()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "fusion",
            "architecture": (
                "image -> class softmax -> class-name mix; concat(image, text, product, difference) "
                "-> dense(relu) -> dense(sigmoid)"
            ),
            "input_size": [self.image_dim + self.text_dim],
            "output_dim": 1,
            "trained": self.trained,
            "weights_sha256": self.weights_sha256,
        }
