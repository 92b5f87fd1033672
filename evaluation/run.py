"""Evaluate image-text matching on real photos, through the HTTP API on the real models.

    python -m evaluation.run [--json results.json]

For each photo, its true and false captions are scored by /fuse (`similarity` and `match`) and ranked by
/caption's `candidates`. Reported per signal: the share of photos whose true captions all outrank all
false ones, the share whose best-scored caption is true, and the mean reciprocal rank of the first true one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np

from evaluation import load_eval_set


def rank_metrics(scores: np.ndarray, is_true: np.ndarray) -> dict[str, float]:
    """For one photo: all-true-first (0/1), top-1 true (0/1), reciprocal rank of the first true caption."""
    order = np.argsort(-scores, kind="stable")
    first_true = int(np.flatnonzero(is_true[order])[0]) + 1
    return {
        "all_true_first": float(scores[is_true].min() > scores[~is_true].max()),
        "top1_true": float(is_true[order[0]]),
        "reciprocal_rank": 1.0 / first_true,
    }


def evaluate(client, photos: list[dict]) -> dict:
    """Per-signal means over the photos, and each photo's detail."""
    per_signal: dict[str, list[dict]] = {"similarity": [], "match": [], "caption_ranking": []}
    details = []
    for photo in photos:
        texts = photo["true"] + photo["false"]
        is_true = np.array([True] * len(photo["true"]) + [False] * len(photo["false"]))
        image = {"image": (io.BytesIO(photo["bytes"]), photo["file"])}
        fused = client.post("/fuse", data={**image, "text": texts}, content_type="multipart/form-data").json
        image = {"image": (io.BytesIO(photo["bytes"]), photo["file"])}
        captioned = client.post("/caption", data={**image, "candidates": texts, "top_k": "3"},
                                content_type="multipart/form-data").json["captions"][0]
        ranked = {r["text"]: len(texts) - k for k, r in enumerate(captioned["ranked"])}
        scores = {
            "similarity": np.array(fused["similarity"][0]),
            "match": np.array(fused["match"][0]),
            "caption_ranking": np.array([ranked[t] for t in texts], np.float64),
        }
        row = {"file": photo["file"], "caption": captioned["caption"],
               "labels": [label["label"] for label in captioned["labels"]]}
        for signal, values in scores.items():
            metrics = rank_metrics(values, is_true)
            per_signal[signal].append(metrics)
            row[signal] = metrics
        row["best_by_caption_ranking"] = captioned["ranked"][0]["text"]
        details.append(row)
    summary = {signal: {key: float(np.mean([m[key] for m in rows])) for key in rows[0]}
               for signal, rows in per_signal.items()}
    return {"photos": len(photos), "summary": summary, "ranked_by": captioned.get("ranked_by"), "details": details}


def print_report(result: dict) -> None:
    print(f"{result['photos']} photos; /caption ranks candidates by: {result['ranked_by']}")
    print(f"{'signal':<16}{'all true first':>16}{'top-1 true':>12}{'MRR':>8}")
    for signal, m in result["summary"].items():
        print(f"{signal:<16}{m['all_true_first']:>16.2f}{m['top1_true']:>12.2f}{m['reciprocal_rank']:>8.3f}")
    print()
    for row in result["details"]:
        print(f"{row['file']:<32} {row['caption']!r}  best: {row['best_by_caption_ranking']!r}")


def main(argv: list[str] | None = None) -> int:
    from app import create_app
    from config import load_config
    from models.loading import build_registry

    parser = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    registry = build_registry(load_config())
    registry.warmup()
    client = create_app({"TESTING": True}, registry=registry).test_client()
    result = evaluate(client, load_eval_set())
    print_report(result)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
