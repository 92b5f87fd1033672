"""Convert the installed image encoder to ONNX, for IMAGE_RUNTIME=onnxruntime.

    python -m models.onnx_export [--image-encoder NAME] [--model-dir DIR] [--force]

Converts the served TensorFlow function (uint8 pixels in; features and softmax probabilities out, batch of
any size) with tf2onnx, runs the ONNX model and the TensorFlow one on the same pixels, refuses the file if
they disagree, and records it in MODEL_DIR/manifest.json with its sha256, the sha256 of the Keras weights it
came from and the measured differences. Idempotent: an up-to-date file is kept. Needs requirements-onnx.txt.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np

from models import weights

OPSET = 17
# Measured: features differ by ~1e-5 (values up to ~40), probabilities by < 1e-6.
FEATURES_RTOL = 1e-4
PROBS_ATOL = 1e-4


def convert(encoder, path: str) -> None:
    """Write the ONNX graph of `encoder` (an ImageEncoder on TensorFlow) to `path`."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    from models.image_encoders import served_outputs

    model, size = encoder.model, encoder.input_size
    spec = [tf.TensorSpec([None, size, size, 3], tf.uint8, name="pixels")]
    # ImageEncoder's own forward pass, with a dynamic batch; the output names come from the dict's keys.
    served = tf.function(lambda pixels: served_outputs(model, pixels), input_signature=spec)

    proto, _ = tf2onnx.convert.from_function(served, input_signature=spec, opset=OPSET)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def compare(encoder, onnx_encoder, seed: int = 0) -> dict[str, float]:
    """Largest differences between the two runtimes on the same pixels (random, and a smooth gradient)."""
    size = encoder.input_size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    smooth = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))], -1)
    pixels = np.concatenate([rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8), smooth[None].astype(np.uint8)])
    tf_features, tf_probs = encoder(pixels)
    ort_features, ort_probs = onnx_encoder(pixels)
    scale = float(np.abs(tf_features).max()) or 1.0
    return {
        "features_max_abs": float(np.abs(tf_features - ort_features).max()),
        "features_max_rel": float(np.abs(tf_features - ort_features).max() / scale),
        "probs_max_abs": float(np.abs(tf_probs - ort_probs).max()),
        "top1_agree": float(np.mean(tf_probs.argmax(1) == ort_probs.argmax(1))),
    }


def export(model_dir: str, name: str, force: bool = False) -> dict[str, Any]:
    """Convert `name` into model_dir/<name>.onnx unless an up-to-date one is there; returns its manifest entry."""
    from models.loading import load_image_encoder, load_onnx_image_encoder

    manifest = weights.verify(model_dir, [name])
    if not force:
        try:
            entry = weights.verify_onnx(model_dir, name, manifest)
            print(f"{name}.onnx: up to date ({entry['sha256'][:12]})")
            return entry
        except weights.WeightsError:
            pass
    started = time.perf_counter()
    encoder = load_image_encoder(name, model_dir, manifest["models"][name])
    path = os.path.join(model_dir, f"{name}.onnx")
    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        tmp_path = os.path.join(tmp, os.path.basename(path))
        convert(encoder, tmp_path)
        entry = {"file": os.path.basename(path), "sha256": weights.sha256_file(tmp_path)}
        diffs = compare(encoder, load_onnx_image_encoder(name, tmp, manifest["models"][name], entry))
        if diffs["features_max_rel"] > FEATURES_RTOL or diffs["probs_max_abs"] > PROBS_ATOL:
            raise weights.WeightsError(f"the ONNX model of {name} disagrees with TensorFlow ({diffs}); not installed.")
        os.replace(tmp_path, path)
    entry.update(
        source_sha256=manifest["models"][name]["sha256"],
        opset=OPSET,
        converter=f"tf2onnx {importlib.metadata.version('tf2onnx')}",
        max_differences_vs_tensorflow=diffs,
        converted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    manifest = weights.read_manifest(model_dir)
    manifest.setdefault("onnx", {})[name] = entry
    weights.write_manifest(model_dir, manifest)
    print(f"{name}.onnx: converted in {time.perf_counter() - started:.1f} s -> {path}; "
          f"features differ by at most {diffs['features_max_abs']:.1e}, probabilities {diffs['probs_max_abs']:.1e}")
    return entry


def main(argv: list[str] | None = None) -> int:
    from config import load_config

    config = load_config()
    parser = argparse.ArgumentParser(prog="python -m models.onnx_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-encoder", default=config["IMAGE_ENCODER"], choices=("efficientnet_lite0", "resnet50"))
    parser.add_argument("--model-dir", default=config["MODEL_DIR"])
    parser.add_argument("--force", action="store_true", help="convert again even if up to date")
    args = parser.parse_args(argv)
    try:
        export(args.model_dir, args.image_encoder, args.force)
    except weights.WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        print(f"error: {err.name or err} is not installed: pip install -r requirements-onnx.txt", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
