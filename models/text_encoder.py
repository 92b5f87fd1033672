"""Sentence text encoder: all-MiniLM-L6-v2 (BERT) written in plain Keras 3.

Reproduces the sentence-transformers pipeline of the packaged
``sentence-transformers/all-MiniLM-L6-v2`` model:

    WordPiece tokenisation ([CLS] ... [SEP], lower-cased, truncated at
    ``max_seq_length``) -> BERT encoder -> mean pooling over the attention
    mask -> L2 normalisation.

The pieces are deliberately separate so the rest of the project can:

* ``read_config(model_dir)``            read the HF ``config.json`` (+ ``max_seq_length``)
* ``build_text_encoder(config)``        build a randomly initialised ``keras.Model``
* ``load_safetensors_weights(model, p)`` copy the HF fp32 tensors into it
* ``model.save_weights("x.weights.h5")`` / ``model.load_weights(...)`` on a
  freshly built model (same config) for the Keras-native cache.

Nothing is built or loaded at import time.  No Flask, no torch.  The only
third-party imports at module level are ``numpy`` and ``keras``;
``tokenizers`` and ``safetensors`` are imported where they are used.

Why hand-written rather than ``keras_hub.models.BertBackbone``: keras-hub
0.32 declares a hard dependency on ``tensorflow-text`` (which pulls the full
``tensorflow`` wheel next to ``tensorflow-cpu``) and on kagglehub/kagglesdk;
it only works here when installed with ``--no-deps`` plus hand-picked extras
(``regex``, ``tokenizers``, ``sentencepiece``; the last one is needed only
once ``from_preset`` imports the HF converters), leaving ``pip check``
broken.  The encoder is ~150 lines and is checked against the PyTorch
reference in ``tests/test_text_encoder.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops

__all__ = [
    "TINY_CONFIG",
    "TextTokenizer",
    "TokenizedBatch",
    "build_text_encoder",
    "load_safetensors_weights",
    "read_config",
    "make_inference_fn",
]

# A tiny random BERT for fast tests of the larger project.  It keeps the real
# vocabulary size (so the real tokenizer.json can feed it) and the real
# position table size (so 256-token inputs work).
TINY_CONFIG: dict = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "initializer_range": 0.02,
    "max_seq_length": 256,
}

_REQUIRED_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
)

# Checkpoint tensors that exist in the HF BertModel file but are not part of
# the sentence-embedding graph: the position-id buffer and the [CLS] pooler
# (sentence-transformers uses mean pooling, never BertPooler).
_IGNORED_PREFIXES = ("embeddings.position_ids", "pooler.")


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


def read_config(model_dir: str) -> dict:
    """Read ``config.json`` (HF BERT) and add ``max_seq_length``.

    ``max_seq_length`` comes from ``sentence_bert_config.json`` when present,
    otherwise it defaults to ``max_position_embeddings``.  Raises
    ``ValueError`` if the sentence-transformers pooling config asks for
    anything other than mean pooling (this module only implements mean).
    """
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"{model_dir}/config.json lacks keys: {missing}")

    st_path = os.path.join(model_dir, "sentence_bert_config.json")
    if os.path.exists(st_path):
        with open(st_path, encoding="utf-8") as f:
            config["max_seq_length"] = int(json.load(f)["max_seq_length"])
    else:
        config.setdefault("max_seq_length", int(config["max_position_embeddings"]))

    pool_path = os.path.join(model_dir, "1_Pooling", "config.json")
    if os.path.exists(pool_path):
        with open(pool_path, encoding="utf-8") as f:
            pool = json.load(f)
        other = [k for k, v in pool.items()
                 if k.startswith("pooling_mode") and v and k != "pooling_mode_mean_tokens"]
        if not pool.get("pooling_mode_mean_tokens", False) or other:
            raise ValueError(f"unsupported pooling config {pool_path}: {pool}")
    return config


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizedBatch:
    token_ids: np.ndarray  # (N, L) int32, 0-padded
    attention_mask: np.ndarray  # (N, L) int32, 1 = real token
    lengths: np.ndarray  # (N,) int32, real tokens per text (incl. [CLS]/[SEP])
    truncated: np.ndarray  # (N,) bool, text was cut at max_length


class TextTokenizer:
    """WordPiece tokenizer (``tokenizers`` library) with bucketed padding.

    The padding of the batch is the smallest bucket >= the longest encoded
    text, so a compiled graph only ever sees a handful of sequence lengths.
    The tokenizer.json built-in padding (fixed 128) is disabled and the
    truncation is set to ``max_length`` (tokens counted *with* [CLS]/[SEP],
    like sentence-transformers).
    """

    def __init__(
        self,
        tokenizer_json_path: str,
        max_length: int = 256,
        buckets: Iterable[int] = (16, 32, 64, 128, 256),
    ):
        from tokenizers import Tokenizer

        max_length = int(max_length)
        if max_length < 2:
            raise ValueError("max_length must be >= 2 ([CLS] and [SEP])")
        self.max_length = max_length
        # Buckets above max_length are useless; max_length is always the last.
        self.buckets = tuple(sorted({int(b) for b in buckets if 0 < int(b) < max_length})) + (
            max_length,
        )

        self._tok = Tokenizer.from_file(tokenizer_json_path)
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length)
        # Second instance without truncation, for num_tokens().  Two instances
        # instead of toggling settings so that both are safe to share between
        # threads.
        self._tok_full = Tokenizer.from_file(tokenizer_json_path)
        self._tok_full.no_padding()
        self._tok_full.no_truncation()
        self.pad_id = 0
        pad = self._tok.token_to_id("[PAD]")
        if pad is not None:
            self.pad_id = int(pad)

    def bucket_for(self, length: int) -> int:
        for b in self.buckets:
            if length <= b:
                return b
        return self.max_length

    def num_tokens(self, text: str) -> int:
        """Tokens ``text`` produces before truncation, [CLS]/[SEP] included."""
        return len(self._tok_full.encode(text).ids)

    def encode_batch(self, texts: Sequence[str]) -> TokenizedBatch:
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, not a str")
        texts = list(texts)
        encs = self._tok.encode_batch(texts) if texts else []
        lengths = np.array([len(e.ids) for e in encs], dtype=np.int32)
        truncated = np.array([bool(e.overflowing) for e in encs], dtype=bool)
        width = self.bucket_for(int(lengths.max()) if len(encs) else 0)
        ids = np.full((len(encs), width), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(encs), width), dtype=np.int32)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
        return TokenizedBatch(ids, mask, lengths, truncated)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(token_ids, attention_mask)``, both int32 of shape (N, L)."""
        b = self.encode_batch(texts)
        return b.token_ids, b.attention_mask


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def _activation(name: str):
    name = (name or "gelu").lower()
    if name == "gelu":  # HF "gelu" is the exact erf form
        return lambda x: keras.activations.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: keras.activations.gelu(x, approximate=True)
    if name == "relu":
        return keras.activations.relu
    raise ValueError(f"unsupported hidden_act: {name!r}")


class BertEmbeddings(layers.Layer):
    """word + absolute position + token-type(0) embeddings, then LayerNorm."""

    def __init__(self, vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
                 layer_norm_eps=1e-12, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.max_position_embeddings = int(max_position_embeddings)
        self.type_vocab_size = int(type_vocab_size)
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        self.layer_norm = layers.LayerNormalization(epsilon=self.layer_norm_eps, name="layer_norm")

    def build(self, input_shape):
        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.word_embeddings = self.add_weight(
            name="word_embeddings", shape=(self.vocab_size, self.hidden_size), initializer=init)
        self.position_embeddings = self.add_weight(
            name="position_embeddings", shape=(self.max_position_embeddings, self.hidden_size),
            initializer=init)
        self.token_type_embeddings = self.add_weight(
            name="token_type_embeddings", shape=(self.type_vocab_size, self.hidden_size),
            initializer=init)
        self.layer_norm.build((None, None, self.hidden_size))

    def call(self, token_ids):
        seq_len = ops.shape(token_ids)[1]
        x = ops.take(self.word_embeddings, token_ids, axis=0)
        x = x + ops.expand_dims(self.position_embeddings[:seq_len], 0)
        x = x + self.token_type_embeddings[0]  # single-segment input
        return self.layer_norm(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_size,)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                   max_position_embeddings=self.max_position_embeddings,
                   type_vocab_size=self.type_vocab_size, layer_norm_eps=self.layer_norm_eps,
                   initializer_range=self.initializer_range)
        return cfg


class BertLayer(layers.Layer):
    """Post-LN transformer block (self-attention + GELU FFN), HF BERT layout."""

    def __init__(self, hidden_size, num_attention_heads, intermediate_size, hidden_act="gelu",
                 layer_norm_eps=1e-12, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_attention_heads)
        self.head_dim = self.hidden_size // self.num_heads
        self.intermediate_size = int(intermediate_size)
        self.hidden_act = hidden_act
        self.layer_norm_eps = float(layer_norm_eps)
        self.initializer_range = float(initializer_range)
        self._act = _activation(hidden_act)
        init = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        h = self.hidden_size
        self.query = layers.Dense(h, kernel_initializer=init, name="query")
        self.key = layers.Dense(h, kernel_initializer=init, name="key")
        self.value = layers.Dense(h, kernel_initializer=init, name="value")
        self.attention_output = layers.Dense(h, kernel_initializer=init, name="attention_output")
        self.attention_layer_norm = layers.LayerNormalization(
            epsilon=self.layer_norm_eps, name="attention_layer_norm")
        self.intermediate = layers.Dense(self.intermediate_size, kernel_initializer=init,
                                         name="intermediate")
        self.output_dense = layers.Dense(h, kernel_initializer=init, name="output_dense")
        self.output_layer_norm = layers.LayerNormalization(
            epsilon=self.layer_norm_eps, name="output_layer_norm")

    def build(self, hidden_shape, attention_mask_shape=None):
        h = self.hidden_size
        for d in (self.query, self.key, self.value, self.attention_output):
            d.build((None, None, h))
        self.attention_layer_norm.build((None, None, h))
        self.intermediate.build((None, None, h))
        self.output_dense.build((None, None, self.intermediate_size))
        self.output_layer_norm.build((None, None, h))

    def _split_heads(self, x):
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (b, t, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))  # (B, H, T, D)

    def call(self, hidden, attention_mask):
        b, t = ops.shape(hidden)[0], ops.shape(hidden)[1]
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / float(np.sqrt(self.head_dim))
        # Padded keys get -1e9: exp() underflows to exactly 0 in float32, so
        # real tokens never attend to padding (batch == one-by-one).
        keep = ops.cast(attention_mask, scores.dtype)[:, None, None, :]
        scores = scores + (1.0 - keep) * -1e9
        probs = ops.softmax(scores, axis=-1)
        ctx = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))
        ctx = ops.reshape(ctx, (b, t, self.hidden_size))
        hidden = self.attention_layer_norm(hidden + self.attention_output(ctx))
        ffn = self.output_dense(self._act(self.intermediate(hidden)))
        return self.output_layer_norm(hidden + ffn)

    def compute_output_shape(self, hidden_shape, attention_mask_shape=None):
        return hidden_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update(hidden_size=self.hidden_size, num_attention_heads=self.num_heads,
                   intermediate_size=self.intermediate_size, hidden_act=self.hidden_act,
                   layer_norm_eps=self.layer_norm_eps, initializer_range=self.initializer_range)
        return cfg


class MeanPoolL2(layers.Layer):
    """Masked mean over tokens then L2 normalisation (sentence-transformers)."""

    def call(self, hidden, attention_mask):
        m = ops.cast(attention_mask, hidden.dtype)[:, :, None]
        summed = ops.sum(hidden * m, axis=1)
        counts = ops.maximum(ops.sum(m, axis=1), 1e-9)  # torch.clamp(min=1e-9)
        pooled = summed / counts
        norm = ops.sqrt(ops.sum(ops.square(pooled), axis=-1, keepdims=True))
        return pooled / ops.maximum(norm, 1e-12)  # F.normalize(eps=1e-12)

    def compute_output_shape(self, hidden_shape, attention_mask_shape=None):
        return (hidden_shape[0], hidden_shape[-1])


def build_text_encoder(config: dict) -> keras.Model:
    """Build a randomly initialised BERT sentence encoder from an HF config dict.

    Inputs: ``token_ids`` and ``attention_mask``, int32, shape (None, None).
    Output: (N, hidden_size) float32 mean-pooled, L2-normalised embeddings.
    """
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"config lacks keys: {missing}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
    eps = float(config.get("layer_norm_eps", 1e-12))
    init_range = float(config.get("initializer_range", 0.02))

    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    attention_mask = keras.Input(shape=(None,), dtype="int32", name="attention_mask")
    x = BertEmbeddings(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        max_position_embeddings=config["max_position_embeddings"],
        type_vocab_size=config.get("type_vocab_size", 2), layer_norm_eps=eps,
        initializer_range=init_range, name="embeddings",
    )(token_ids)
    for i in range(int(config["num_hidden_layers"])):
        x = BertLayer(
            hidden_size=config["hidden_size"],
            num_attention_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            hidden_act=config.get("hidden_act", "gelu"), layer_norm_eps=eps,
            initializer_range=init_range, name=f"layer_{i}",
        )(x, attention_mask)
    out = MeanPoolL2(name="mean_pool_l2")(x, attention_mask)
    return keras.Model(inputs={"token_ids": token_ids, "attention_mask": attention_mask},
                       outputs=out, name="text_encoder")


# --------------------------------------------------------------------------
# Weight loading
# --------------------------------------------------------------------------


def _weight_map(model: keras.Model) -> dict:
    """HF checkpoint key -> (keras variable, transpose?)."""
    emb = model.get_layer("embeddings")
    out = {
        "embeddings.word_embeddings.weight": (emb.word_embeddings, False),
        "embeddings.position_embeddings.weight": (emb.position_embeddings, False),
        "embeddings.token_type_embeddings.weight": (emb.token_type_embeddings, False),
        "embeddings.LayerNorm.weight": (emb.layer_norm.gamma, False),
        "embeddings.LayerNorm.bias": (emb.layer_norm.beta, False),
    }
    i = 0
    while True:
        try:
            lyr = model.get_layer(f"layer_{i}")
        except ValueError:
            break
        p = f"encoder.layer.{i}."
        for hf, dense in (
            ("attention.self.query", lyr.query), ("attention.self.key", lyr.key),
            ("attention.self.value", lyr.value), ("attention.output.dense", lyr.attention_output),
            ("intermediate.dense", lyr.intermediate), ("output.dense", lyr.output_dense),
        ):
            out[p + hf + ".weight"] = (dense.kernel, True)  # torch Linear is (out, in)
            out[p + hf + ".bias"] = (dense.bias, False)
        for hf, ln in (("attention.output.LayerNorm", lyr.attention_layer_norm),
                       ("output.LayerNorm", lyr.output_layer_norm)):
            out[p + hf + ".weight"] = (ln.gamma, False)
            out[p + hf + ".bias"] = (ln.beta, False)
        i += 1
    return out


def load_safetensors_weights(model: keras.Model, path: str) -> None:
    """Assign every tensor of an HF BERT ``model.safetensors`` to ``model``.

    Keys may carry a ``bert.`` prefix.  ``embeddings.position_ids`` and
    ``pooler.*`` are ignored (not used for mean-pooled sentence embeddings).
    Raises ``ValueError`` listing every missing key, unused key and shape
    mismatch; nothing is assigned unless all checks pass.
    """
    from safetensors.numpy import load_file

    tensors = load_file(path)
    if tensors and all(k.startswith("bert.") for k in tensors):
        tensors = {k[len("bert."):]: v for k, v in tensors.items()}
    tensors = {k: v for k, v in tensors.items() if not k.startswith(_IGNORED_PREFIXES)}

    wmap = _weight_map(model)
    covered = {id(v) for v, _ in wmap.values()}
    unmapped_vars = [v.path for v in model.weights if id(v) not in covered]
    missing = sorted(set(wmap) - set(tensors))
    unused = sorted(set(tensors) - set(wmap))
    mismatched = []
    arrays = {}
    for key, (var, transpose) in wmap.items():
        if key not in tensors:
            continue
        arr = tensors[key].T if transpose else tensors[key]
        if tuple(arr.shape) != tuple(var.shape):
            mismatched.append(f"{key}: checkpoint {tuple(arr.shape)} vs model {tuple(var.shape)}")
        else:
            arrays[key] = np.ascontiguousarray(arr, dtype=var.dtype)
    problems = []
    if missing:
        problems.append(f"missing keys in checkpoint: {missing}")
    if unused:
        problems.append(f"unused keys in checkpoint: {unused}")
    if mismatched:
        problems.append("shape mismatches: " + "; ".join(mismatched))
    if unmapped_vars:
        problems.append(f"model variables without a checkpoint key: {unmapped_vars}")
    if problems:
        raise ValueError(f"cannot load {path}:\n  " + "\n  ".join(problems))
    for key, arr in arrays.items():
        wmap[key][0].assign(arr)


# --------------------------------------------------------------------------
# Inference helper
# --------------------------------------------------------------------------


def make_inference_fn(model: keras.Model, jit_compile: bool = False):
    """Return ``fn(token_ids, attention_mask) -> np.ndarray`` for serving.

    On the TensorFlow backend this is a ``tf.function`` with a (None, None)
    int32 signature, traced once for every length; elsewhere a plain call.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec((None, None), tf.int32)

        @tf.function(input_signature=[spec, spec], jit_compile=jit_compile)
        def _fn(token_ids, attention_mask):
            return model({"token_ids": token_ids, "attention_mask": attention_mask},
                         training=False)

        def run(token_ids, attention_mask):
            return _fn(tf.convert_to_tensor(token_ids, tf.int32),
                       tf.convert_to_tensor(attention_mask, tf.int32)).numpy()
        return run

    def run(token_ids, attention_mask):
        return keras.ops.convert_to_numpy(
            model({"token_ids": token_ids, "attention_mask": attention_mask}, training=False))
    return run
