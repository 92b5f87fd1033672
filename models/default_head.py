"""Build the default fusion head offline, reproducibly, from what is real here.

No image-caption pairs ship offline, so the head is distilled from the two real models:

* image side: for every ImageNet class, feature vectors that the real classifier assigns to that class,
  made by gradient ascent on the class's log-probability in feature space (the classifier is linear on
  the pooled features) from the features of real photos that are *not* in the evaluation set, to a
  confidence drawn at random, clipped to the features' real range;
* text side: the class's names and WordNet synonyms in several prompt templates (positives), and other
  classes' prompts (negatives: random ones and the nearest ones in the sentence space, which the
  classifier gives < 5 % probability).

The validation split holds out whole classes, so its AUC measures matching of classes never trained on.
What it is good for: telling whether a text names what the image encoder sees, for the 1000 ImageNet
concepts and paraphrases of them. What it cannot know: anything the classifier does not see (colours,
counts, scenes, relations).

    python -m models.default_head [--model-dir DIR] [--out DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import asdict

import numpy as np

from models.captions import with_article
from models.imagenet import class_synonyms
from models.training import classifier_weights

TEMPLATES = ("a photo of {}", "{} in the picture", "a close-up of {}", "{}")
START_PHOTOS = ("brick.png", "grass.png", "gravel.png", "cell.png", "color.png", "logo.png", "page.png",
                "text.png", "clock_motion.png", "ihc.png")
EPOCHS, BATCH, STARTS_PER_CLASS = 6, 128, 3
RECIPE = 2  # bump when the data or the head changes, so `make install` trains the head again


def start_features(image_encoder) -> np.ndarray:
    """Features of real photos outside the evaluation set (textures, diagrams), plus their mirror images."""
    import skimage
    from PIL import Image, ImageOps

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    batch = []
    for name in START_PHOTOS:
        with Image.open(os.path.join(folder, name)) as image:
            rgb = image.convert("RGB")
        batch += [image_encoder.preprocess(rgb), image_encoder.preprocess(ImageOps.mirror(rgb))]
    features, _ = image_encoder(np.stack(batch))
    return features


def class_features(kernel, bias, starts, rng, per_class: int, steps: int = 150, lr: float = 0.05):
    """Per class, `per_class` feature vectors the classifier assigns to it with a random target confidence."""
    num_classes = kernel.shape[1]
    classes = np.repeat(np.arange(num_classes), per_class)
    feats = starts[rng.integers(0, len(starts), len(classes))].copy()
    feats += rng.normal(0, 0.05, feats.shape).astype(np.float32) * feats.std()
    target = rng.uniform(0.3, 0.95, len(classes)).astype(np.float32)
    high = float(starts.max())
    for _ in range(steps):
        logits = feats @ kernel + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        active = probs[np.arange(len(classes)), classes] < target
        if not active.any():
            break
        grad = kernel.T[classes[active]] - probs[active] @ kernel.T  # d log p_c / d f
        feats[active] = np.clip(feats[active] + lr * grad, 0.0, high)
    logits = feats @ kernel + bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return feats, classes, probs / probs.sum(axis=1, keepdims=True)


def class_texts(rng) -> list[list[str]]:
    """Every class's positive prompts: names and synonyms in each template."""
    out = []
    for names in class_synonyms():
        prompts = [t.format(with_article(n) if t != "{}" else n) for n in names[:3] for t in TEMPLATES]
        out.append(prompts)
    return out


def build_dataset(image_encoder, text_encoder, seed: int = 0, per_class: int = STARTS_PER_CLASS):
    """(image features, text embeddings, labels, groups=class) for the default head."""
    rng = np.random.default_rng(seed)
    kernel, bias = classifier_weights(image_encoder.model)
    feats, classes, probs = class_features(kernel, bias, start_features(image_encoder), rng, per_class)
    prompts = class_texts(rng)
    flat = [p for ps in prompts for p in ps]
    offsets = np.cumsum([0] + [len(ps) for ps in prompts])
    embeddings = text_encoder.encode(flat)
    names = embeddings[offsets[:-1]]  # first prompt of each class, for hard negatives
    nearest = np.argsort(-(names @ names.T), axis=1)[:, 1:21]
    rows_img, rows_txt, labels = [], [], []
    for i, c in enumerate(classes):
        for _ in range(2):
            rows_img.append(i)
            rows_txt.append(offsets[c] + rng.integers(0, len(prompts[c])))
            labels.append(1)
        unlikely = probs[i] < 0.05
        hard = [k for k in nearest[c] if unlikely[k]]
        negatives = list(rng.choice(hard, size=min(2, len(hard)), replace=False)) if hard else []
        while len(negatives) < 4:
            k = int(rng.integers(0, len(prompts)))
            if unlikely[k]:
                negatives.append(k)
        for k in negatives:
            rows_img.append(i)
            rows_txt.append(offsets[k] + rng.integers(0, len(prompts[k])))
            labels.append(0)
    x_image = feats[rows_img].astype(np.float32)
    x_text = embeddings[rows_txt].astype(np.float32)
    return x_image, x_text, np.array(labels, np.float32), classes[rows_img]


def main(argv: list[str] | None = None) -> int:
    from config import load_config
    from models import weights
    from models.heads import encoder_identity
    from models.loading import load_image_encoder, load_text_encoder
    from models.training import HyperParameters, teacher_weights, train_head, write_outputs

    config = load_config()
    parser = argparse.ArgumentParser(prog="python -m models.default_head", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=config["MODEL_DIR"])
    parser.add_argument("--image-encoder", default=config["IMAGE_ENCODER"], choices=("efficientnet_lite0", "resnet50"))
    parser.add_argument("--out", default=None, help="default: MODEL_DIR/fusion_head")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="train again even if a head for these encoders exists")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.model_dir, "fusion_head")
    try:
        manifest = weights.verify(args.model_dir, [args.image_encoder, weights.TEXT_ENCODER])
    except weights.WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    image = load_image_encoder(args.image_encoder, args.model_dir, manifest["models"][args.image_encoder])
    text = load_text_encoder(args.model_dir, manifest["models"][weights.TEXT_ENCODER])
    identity = encoder_identity(image, text)
    existing = os.path.join(out, "manifest.json")
    if not args.force and os.path.exists(existing):
        import json

        with open(existing, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("encoders") == identity and old.get("data", {}).get("seed") == args.seed \
                and old.get("data", {}).get("recipe") == RECIPE:
            print(f"fusion head in {out} is up to date")
            return 0
    x_image, x_text, labels, groups = build_dataset(image, text, args.seed)
    params = HyperParameters(epochs=EPOCHS, batch_size=BATCH, val_split=0.1, learning_rate=1e-3, seed=args.seed)
    model, history, metrics = train_head(x_image, x_text, labels, groups, params, verbose=2,
                                         teacher=teacher_weights(image, text, os.path.join(args.model_dir, "cache")))
    digest = hashlib.sha256(x_image.tobytes() + x_text.tobytes() + labels.tobytes()).hexdigest()
    manifest = {
        "name": "default_fusion_head",
        "data": {"source": "python -m models.default_head (class-conditional features + ImageNet prompts)",
                 "seed": args.seed, "recipe": RECIPE, "sha256": digest, "rows": int(len(labels)),
                 "positives": int(labels.sum()),
                 "validation": "10% of ImageNet classes held out"},
        "encoders": identity,
        "hyperparameters": asdict(params),
    }
    outputs = write_outputs(out, model, history, metrics, manifest)
    print(f"default head: val ROC-AUC {metrics['val_roc_auc']:.3f}, val accuracy {metrics['val_accuracy']:.3f} "
          f"-> {outputs['head']}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
