"""A MODEL_DIR for ResNet50 with random-initialised weights, for benchmarks only (same FLOPs as ImageNet's).

    python -m bench.random_weights --source model_store --out bench/results/model_store_resnet50_random

The official ResNet50 ImageNet file cannot be fetched offline here; speed does not depend on the values.
The text encoder's files are linked from --source, and the manifest lists all of them with their hashes.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make(source: str, out: str) -> str:
    from models import weights
    from models.image_encoders import build_resnet50_base

    manifest = weights.read_manifest(source)
    text = manifest["models"][weights.TEXT_ENCODER]
    os.makedirs(out, exist_ok=True)
    for name in (text["file"], text["tokenizer"]["file"]):
        link = os.path.join(out, name)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(source, name)), link)
    path = os.path.join(out, "resnet50_random.weights.h5")
    if not os.path.exists(path):
        build_resnet50_base().save_weights(path)
    entry = {
        "architecture": "ResNet50 (keras.applications), RANDOM-INITIALISED weights: for benchmarks only",
        "file": os.path.basename(path),
        "preprocessing": weights.PREPROCESSING["resnet50"],
        "sha256": weights.sha256_file(path),
    }
    with open(os.path.join(out, weights.MANIFEST), "w") as f:
        json.dump({"models": {weights.TEXT_ENCODER: text, "resnet50": entry}}, f, indent=2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="model_store")
    parser.add_argument("--out", default="bench/results/model_store_resnet50_random")
    args = parser.parse_args()
    print(make(args.source, args.out))


if __name__ == "__main__":
    main()
