"""Build a worker's registry from config: verified converted weights -> served models."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from models import bridge, weights
from models.batching import BatchSettings
from models.fusion import FusionHead, build_fusion_head
from models.heads import load_head
from models.image_encoders import ImageEncoder
from models.imagenet import class_names, class_synonyms
from models.registry import ModelRegistry
from models.text import TextEncoder

log = logging.getLogger(__name__)


def configure_tensorflow(config: dict[str, Any]) -> None:
    """Thread pools must be set before TensorFlow runs its first op in this process."""
    import tensorflow as tf

    try:
        if config.get("TF_INTRA_OP_THREADS"):
            tf.config.threading.set_intra_op_parallelism_threads(config["TF_INTRA_OP_THREADS"])
        if config.get("TF_INTER_OP_THREADS"):
            tf.config.threading.set_inter_op_parallelism_threads(config["TF_INTER_OP_THREADS"])
    except RuntimeError:
        log.warning("TensorFlow already initialised; thread settings left as they were")


def encoder_spec(name: str) -> tuple[int, int, Callable[[Image.Image], np.ndarray]]:
    """(input size, feature dim, preprocess) of an image encoder, whatever runs it."""
    if name == "efficientnet_lite0":
        from models import efficientnet_lite

        return efficientnet_lite.INPUT_SIZE, efficientnet_lite.FEATURE_DIM, efficientnet_lite.preprocess
    if name == "resnet50":
        from models.image_encoders import resnet50_preprocess

        return 224, 2048, resnet50_preprocess
    raise ValueError(f"unknown image encoder {name!r}")


def build_keras_image_model(name: str, weights_path: str):
    """The served Keras model of an image encoder (RGB [0, 255] in; features and logits out), weights loaded."""
    if name == "efficientnet_lite0":
        from models import efficientnet_lite

        model = efficientnet_lite.build_efficientnet_lite0()
        model.load_weights(weights_path)
        return model
    if name == "resnet50":
        from models.image_encoders import build_resnet50_base, wrap_resnet50

        base = build_resnet50_base()
        base.load_weights(weights_path)
        return wrap_resnet50(base)
    raise ValueError(f"unknown image encoder {name!r}")


def load_image_encoder(name: str, model_dir: str, entry: dict[str, Any]) -> ImageEncoder:
    """The TensorFlow image encoder from its converted Keras weights."""
    size, dim, preprocess = encoder_spec(name)
    model = build_keras_image_model(name, os.path.join(model_dir, entry["file"]))
    return ImageEncoder(name, entry["architecture"], model, size, dim, preprocess, entry["preprocessing"],
                        entry["sha256"])


def load_onnx_image_encoder(name: str, model_dir: str, entry: dict[str, Any], onnx_entry: dict[str, Any],
                            threads: int = 0, spinning: bool = False) -> ImageEncoder:
    """The same image encoder run by ONNX Runtime, from the file `python -m models.onnx_export` wrote."""
    from models.onnx_runtime import OnnxImageEncoder, create_session

    size, dim, preprocess = encoder_spec(name)
    session = create_session(os.path.join(model_dir, onnx_entry["file"]), threads, spinning)
    return OnnxImageEncoder(name, entry["architecture"], session, size, dim, preprocess, entry["preprocessing"],
                            entry["sha256"], onnx_sha256=onnx_entry["sha256"])


def load_served_image_encoder(name: str, model_dir: str, manifest: dict[str, Any], runtime: str,
                              onnx_threads: int = 0, onnx_spinning: bool = False) -> ImageEncoder:
    """The image encoder on `runtime` (IMAGE_RUNTIME), from a verified manifest of model_dir."""
    if runtime == "onnxruntime":
        onnx_entry = weights.verify_onnx(model_dir, name, manifest)
        return load_onnx_image_encoder(name, model_dir, manifest["models"][name], onnx_entry, onnx_threads,
                                       onnx_spinning)
    return load_image_encoder(name, model_dir, manifest["models"][name])


def load_text_encoder(model_dir: str, entry: dict[str, Any]) -> TextEncoder:
    from models import text_encoder

    tokenizer_path = os.path.join(model_dir, entry["tokenizer"]["file"])
    if weights.sha256_file(tokenizer_path) != entry["tokenizer"]["sha256"]:
        raise weights.WeightsError(f"{tokenizer_path} does not match the manifest: run `make install`.")
    config = entry["config"]
    model = text_encoder.build_text_encoder(config)
    model.load_weights(os.path.join(model_dir, entry["file"]))
    max_tokens = config.get("max_seq_length", 256)
    tokenizer = text_encoder.TextTokenizer(tokenizer_path, max_length=max_tokens)
    return TextEncoder(weights.TEXT_ENCODER, entry["architecture"], model, tokenizer, config["hidden_size"],
                       max_tokens, entry["preprocessing"], entry["sha256"])


def load_fusion_head(config: dict[str, Any], image: ImageEncoder, text: TextEncoder) -> FusionHead:
    """The configured trained head, else an untrained one (reported as such in /models)."""
    path = config.get("FUSION_HEAD") or os.path.join(config["MODEL_DIR"], "fusion_head")
    if os.path.isdir(path) or config.get("FUSION_HEAD"):
        return load_head(path, image, text)
    log.warning("no trained fusion head at %s: serving an untrained head (run `make train-default-head`)", path)
    model = build_fusion_head(image.feature_dim, text.dim)
    return FusionHead(model, image.feature_dim, text.dim, trained=False)


def build_worker_registry(config: dict[str, Any]) -> ModelRegistry:
    """A serving worker's registry, on this worker's share of the cores (TF_INTRA_OP_THREADS, ...)."""
    configure_tensorflow(config)
    return build_registry(config)


def build_registry(config: dict[str, Any]) -> ModelRegistry:
    """Everything one worker serves, from MODEL_DIR; raises WeightsError with a clear sentence if unusable.

    TensorFlow's thread pools are the caller's to set (`configure_tensorflow`, before TensorFlow's first op):
    a server worker takes its share of the cores, a one-process tool (evaluation, tests) all of them.
    """
    name = config["IMAGE_ENCODER"]
    manifest = weights.verify(config["MODEL_DIR"], [name, weights.TEXT_ENCODER])
    image = load_served_image_encoder(name, config["MODEL_DIR"], manifest, config.get("IMAGE_RUNTIME", "tensorflow"),
                                      config.get("ONNX_THREADS", 0), config.get("ONNX_SPINNING", False))
    text = load_text_encoder(config["MODEL_DIR"], manifest["models"][weights.TEXT_ENCODER])
    head = load_fusion_head(config, image, text)
    registry = ModelRegistry(image, text, head, class_names(), batching=BatchSettings.from_config(config),
                             class_synonyms=class_synonyms())
    registry.class_embeddings = bridge.cached_class_embeddings(text, registry.class_synonyms,
                                                                os.path.join(config["MODEL_DIR"], "cache"))
    return registry
