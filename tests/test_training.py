"""The fusion head's training command: it learns, writes its outputs, reloads exactly, refuses mismatches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from models import weights
from models.example_pairs import write_example_pairs
from models.heads import load_head
from models.train_fusion import DataError, main, read_pairs
from models.training import roc_auc, split_by_group


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory):
    """The demonstration dataset: crops of four photos, each paired with its own text (1) and the others' (0)."""
    return write_example_pairs(str(tmp_path_factory.mktemp("pairs")))


def test_training_command_learns_and_writes_its_outputs(pairs_csv, tmp_path, model_dir, real_registry):
    out = tmp_path / "head"
    code = main(["--data", pairs_csv, "--out", str(out), "--epochs", "12", "--batch-size", "16",
                 "--val-split", "0.25", "--lr", "3e-3", "--seed", "1", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert {"head.keras", "manifest.json", "metrics.json", "learning_curve.png"} <= set(os.listdir(out))
    metrics = json.loads((out / "metrics.json").read_text())
    history = metrics["history"]
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert metrics["final"]["val_roc_auc"] > 0.8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hyperparameters"]["epochs"] == 12 and manifest["data"]["rows"] == 160
    assert manifest["encoders"]["image"]["weights_sha256"] == real_registry.image_encoder.weights_sha256
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(os.listdir(tmp_path / "cache" / os.listdir(tmp_path / "cache")[0])) == 40  # one per image

    # The saved head reloads to outputs identical to the model the trainer held in memory.
    from models.train_fusion import train_from_file
    from models.training import HyperParameters

    params = HyperParameters(epochs=2, batch_size=16, seed=3)
    _, trained = train_from_file(pairs_csv, str(tmp_path / "again"), params, real_registry.image_encoder,
                                 real_registry.text_encoder, str(tmp_path / "cache"), verbose=0)
    head = load_head(str(tmp_path / "again"), real_registry.image_encoder, real_registry.text_encoder)
    rng = np.random.default_rng(0)
    x = [rng.random((5, 1280), np.float32) * 2, rng.normal(size=(5, 384)).astype(np.float32)]
    np.testing.assert_array_equal(np.asarray(head.model(x)), np.asarray(trained(x)))
    assert head.trained and head.manifest["hyperparameters"]["seed"] == 3


def test_a_head_for_other_encoders_is_refused(tmp_path, pairs_csv, real_registry, tiny_registry):
    from models.train_fusion import train_from_file
    from models.training import HyperParameters

    train_from_file(pairs_csv, str(tmp_path / "tiny_head"), HyperParameters(epochs=1), tiny_registry.image_encoder,
                    tiny_registry.text_encoder, verbose=0)
    with pytest.raises(weights.WeightsError, match="trained against the image encoder tiny_cnn"):
        load_head(str(tmp_path / "tiny_head"), real_registry.image_encoder, real_registry.text_encoder)


def test_bad_training_data_is_refused_clearly(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,caption\nx.png,a cat\n")
    with pytest.raises(DataError, match="columns image,text,label"):
        read_pairs(str(bad))
    bad.write_text("image,text,label\nmissing.png,a cat,1\n")
    with pytest.raises(DataError, match="not found"):
        read_pairs(str(bad))
    (tmp_path / "x.png").write_bytes(b"")
    bad.write_text("image,text,label\nx.png,a cat,yes\n")
    with pytest.raises(DataError, match="label must be 0 or 1"):
        read_pairs(str(bad))
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"image": "x.png", "text": "a cat", "label": 1}\n')
    assert read_pairs(str(jsonl)) == [(str(tmp_path / "x.png"), "a cat", 1)]


def test_roc_auc_and_group_split():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    groups = np.repeat(np.arange(10), 3)
    train, val = split_by_group(groups, 0.2, seed=0)
    assert set(groups[train]).isdisjoint(groups[val]) and len(set(groups[val])) == 2
