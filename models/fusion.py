"""The fusion head: concat(image features, text embedding) -> Dense -> sigmoid match probability."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_HIDDEN = 256


def build_fusion_head(image_dim: int, text_dim: int, hidden: int = DEFAULT_HIDDEN, dropout: float = 0.2, seed: int = 0):
    """Keras model: inputs (image_features (N, image_dim), text_embedding (N, text_dim)) -> (N, 1) in [0, 1].

    Image features are L2-normalised in the graph so raw CNN features of any scale can be fed.
    """
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((image_dim,), name="image_features")
    text = keras.Input((text_dim,), name="text_embedding")
    x = keras.layers.Concatenate(name="concat")(
        [keras.layers.UnitNormalization(name="image_l2")(image), keras.layers.UnitNormalization(name="text_l2")(text)]
    )
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="match")(x)
    return keras.Model([image, text], out, name="fusion_head")


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
            "architecture": "concat -> dense(relu) -> dense(sigmoid)",
            "input_size": [self.image_dim + self.text_dim],
            "output_dim": 1,
            "trained": self.trained,
            "weights_sha256": self.weights_sha256,
        }
