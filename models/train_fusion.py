"""Train a fusion head on your own (image, text, label) pairs.

    python -m models.train_fusion --data pairs.csv --out runs/my_head [--epochs 10] [--batch-size 64]
        [--val-split 0.2] [--lr 1e-3] [--seed 0] [--hidden 256]

The data is CSV with a header `image,text,label` or JSONL with those keys per line; `image` is a path
(relative to the data file), `label` is 1 when the text describes the image, else 0. Image features are
cached per image (by content hash and encoder) so epochs and re-runs never re-run the CNN. Writes
head.keras, manifest.json, metrics.json and learning_curve.png into --out; serve it with FUSION_HEAD=--out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from dataclasses import asdict

import numpy as np

from models.training import HyperParameters, teacher_weights, train_head, write_outputs
from models.weights import sha256_file


class DataError(ValueError):
    """The training data cannot be used; the message names the file and row."""


def read_pairs(path: str) -> list[tuple[str, str, int]]:
    """Rows of (absolute image path, text, label) from CSV or JSONL."""
    base = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        if path.endswith((".jsonl", ".ndjson")):
            records = []
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append((n, json.loads(line)))
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}:{n}: not JSON ({err.msg})") from None
        else:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", "text", "label"} <= set(reader.fieldnames):
                raise DataError(f"{path}: the CSV header must have the columns image,text,label")
            records = [(n, record) for n, record in enumerate(reader, 2)]
    for n, record in records:
        if not isinstance(record, dict) or not {"image", "text", "label"} <= set(record):
            raise DataError(f"{path}:{n}: needs image, text and label")
        label = str(record["label"]).strip()
        if label not in ("0", "1", "0.0", "1.0", "True", "False", "true", "false"):
            raise DataError(f"{path}:{n}: label must be 0 or 1, got {record['label']!r}")
        image = os.path.join(base, str(record["image"]))
        if not os.path.isfile(image):
            raise DataError(f"{path}:{n}: image {record['image']!r} not found")
        text = str(record["text"])
        if not text.strip():
            raise DataError(f"{path}:{n}: empty text")
        rows.append((image, text, int(label in ("1", "1.0", "True", "true"))))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def image_features(hashes: dict[str, str], encoder, cache_dir: str | None, verbose: int = 1) -> dict[str, np.ndarray]:
    """Features of each image (path -> sha256), from the cache when the same bytes were seen with this encoder."""
    import keras
    from PIL import Image, ImageOps

    features: dict[str, np.ndarray] = {}
    todo = sorted(hashes)
    tag = f"{encoder.name}-{(encoder.weights_sha256 or 'random')[:16]}"
    folder = os.path.join(cache_dir, tag) if cache_dir else None
    if folder:
        os.makedirs(folder, exist_ok=True)
    progress = keras.utils.Progbar(len(todo), verbose=verbose, unit_name="image")
    for i, path in enumerate(todo, 1):
        cached = os.path.join(folder, hashes[path] + ".npy") if folder else None
        if cached and os.path.exists(cached):
            features[path] = np.load(cached)
        else:
            with Image.open(path) as image:
                rgb = ImageOps.exif_transpose(image).convert("RGB")
            feats, _ = encoder(encoder.preprocess(rgb)[None])
            features[path] = feats[0]
            if cached:
                np.save(cached, feats[0])
        progress.update(i)
    return features


def train_from_file(data: str, out: str, params: HyperParameters, image_encoder, text_encoder,
                    cache_dir: str | None = None, verbose: int = 1) -> tuple[dict, object]:
    """The whole command on given encoders: read, featurise (cached), fit, write -> (final metrics, model)."""
    from models.heads import encoder_identity

    rows = read_pairs(data)
    paths = [r[0] for r in rows]
    hashes = {path: sha256_file(path) for path in set(paths)}  # feature cache keys and the data hash
    feats = image_features(hashes, image_encoder, cache_dir, verbose)
    texts = sorted({r[1] for r in rows})
    embedded = dict(zip(texts, text_encoder.encode(texts), strict=True))
    x_image = np.stack([feats[p] for p in paths]).astype(np.float32)
    x_text = np.stack([embedded[r[1]] for r in rows]).astype(np.float32)
    labels = np.array([r[2] for r in rows], np.float32)
    # Start from (and freeze) the classifier and class-name layers: little data then still generalises.
    teacher = teacher_weights(image_encoder, text_encoder, os.path.dirname(cache_dir) if cache_dir else None)
    model, history, metrics = train_head(x_image, x_text, labels, np.array(paths), params, verbose, teacher)
    data_hash = hashlib.sha256((sha256_file(data) + "".join(sorted(hashes.values()))).encode()).hexdigest()
    manifest = {
        "name": os.path.basename(os.path.normpath(out)) or "fusion_head",
        "data": {"file": os.path.basename(data), "sha256": data_hash, "rows": len(rows),
                 "images": len(hashes), "positives": int(labels.sum())},
        "encoders": encoder_identity(image_encoder, text_encoder),
        "hyperparameters": asdict(params),
    }
    outputs = write_outputs(out, model, history, metrics, manifest)
    if verbose:
        print(json.dumps({"final": metrics, **outputs}, indent=2))
    return metrics, model


def main(argv: list[str] | None = None) -> int:
    from config import load_config
    from models import weights
    from models.loading import load_image_encoder, load_text_encoder

    config = load_config()
    defaults = HyperParameters()
    parser = argparse.ArgumentParser(prog="python -m models.train_fusion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="CSV (image,text,label) or JSONL")
    parser.add_argument("--out", required=True, help="output folder for the head")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--val-split", type=float, default=defaults.val_split)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--model-dir", default=config["MODEL_DIR"])
    parser.add_argument("--image-encoder", default=config["IMAGE_ENCODER"], choices=("efficientnet_lite0", "resnet50"))
    parser.add_argument("--cache-dir", default=None, help="feature cache (default MODEL_DIR/cache/features)")
    args = parser.parse_args(argv)
    if not 0 <= args.val_split < 1 or args.epochs < 1 or args.batch_size < 1:
        parser.error("need 0 <= --val-split < 1, --epochs >= 1 and --batch-size >= 1")
    params = HyperParameters(args.epochs, args.batch_size, args.val_split, args.lr, args.seed, args.hidden)
    try:
        manifest = weights.verify(args.model_dir, [args.image_encoder, weights.TEXT_ENCODER])
        image = load_image_encoder(args.image_encoder, args.model_dir, manifest["models"][args.image_encoder])
        text = load_text_encoder(args.model_dir, manifest["models"][weights.TEXT_ENCODER])
        train_from_file(args.data, args.out, params, image, text,
                        args.cache_dir or os.path.join(args.model_dir, "cache", "features"))
    except (weights.WeightsError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
