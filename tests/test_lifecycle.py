"""Readiness before and after warm-up, and configuration read from the environment."""

from __future__ import annotations

import threading

import pytest

from app import create_app
from config import load_config


def test_readyz_is_503_until_the_registry_is_warm(tiny_registry, monkeypatch):
    gate = threading.Event()

    def slow_build(config):
        gate.wait(10)
        return tiny_registry

    monkeypatch.setattr("models.loading.build_registry", slow_build)
    client = create_app({"TESTING": True}).test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.json == {"status": "loading"}
    assert client.get("/healthz").status_code == 200
    resp = client.post("/encode", json={"texts": ["a"]})
    assert resp.status_code == 503 and resp.json["error"]["code"] == "not_ready" and resp.headers["Retry-After"]
    gate.set()
    client.application.extensions["models"].wait(10)
    assert client.get("/readyz").json == {"status": "ready"}
    assert client.post("/encode", json={"texts": ["a"]}).status_code == 200


def test_failed_load_is_reported(monkeypatch):
    def broken(config):
        raise RuntimeError("No converted weights for resnet50")

    monkeypatch.setattr("models.loading.build_registry", broken)
    app = create_app({"TESTING": True})
    app.extensions["models"].wait(10)
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503 and resp.json["status"] == "failed"
    assert "resnet50" in resp.json["error"]
    assert app.test_client().post("/encode", json={"texts": ["a"]}).json["error"]["code"] == "models_failed"


def test_config_defaults():
    config = load_config({})
    assert (config["HOST"], config["PORT"], config["IMAGE_ENCODER"]) == ("127.0.0.1", 8000, "efficientnet_lite0")
    assert config["MAX_IMAGES"] == 64 and config["MAX_TEXTS"] == 256 and config["MAX_TEXT_CHARS"] == 10_000


def test_config_from_environment():
    config = load_config({"PORT": "9001", "WORKERS": "3", "IMAGE_ENCODER": "resnet50", "MODEL_DIR": "/m",
                          "RESNET50_WEIGHTS": "/w.h5", "MAX_CONTENT_LENGTH": "1024", "LOG_LEVEL": "debug"})
    assert config["PORT"] == 9001 and config["WORKERS"] == 3 and config["IMAGE_ENCODER"] == "resnet50"
    assert config["MODEL_DIR"] == "/m" and config["RESNET50_WEIGHTS"] == "/w.h5"
    assert config["MAX_CONTENT_LENGTH"] == 1024 and config["LOG_LEVEL"] == "DEBUG"


@pytest.mark.parametrize(("env", "message"), [({"PORT": "http"}, "PORT must be an integer"),
                                              ({"IMAGE_ENCODER": "vgg"}, "IMAGE_ENCODER must be one of"),
                                              ({"WORKERS": "0"}, "WORKERS must be >= 1")])
def test_bad_config_is_refused_clearly(env, message):
    with pytest.raises(ValueError, match=message):
        load_config(env)


def test_app_reads_environment_at_creation(monkeypatch, tiny_registry):
    monkeypatch.setenv("MAX_TEXTS", "1")
    client = create_app({"TESTING": True}, registry=tiny_registry).test_client()
    assert client.post("/encode", json={"texts": ["a", "b"]}).json["error"]["code"] == "too_many_texts"


@pytest.mark.parametrize(("env", "layout"), [
    # (workers, passes at once, TF intra / inter threads, ONNX threads, max batch)
    ({"CPUS": "2"}, (1, 2, 1, 2, 2, 4)),
    ({"CPUS": "2", "IMAGE_ENCODER": "resnet50"}, (1, 1, 2, 1, 2, 8)),
    ({"CPUS": "2", "IMAGE_ENCODER": "resnet50", "IMAGE_RUNTIME": "onnxruntime"}, (1, 1, 2, 1, 2, 8)),
    ({"CPUS": "16"}, (1, 4, 4, 4, 16, 4)),
    ({"CPUS": "1"}, (1, 1, 1, 1, 1, 8)),
    ({"CPUS": "8", "WORKERS": "2"}, (2, 4, 1, 4, 4, 4)),
    ({"CPUS": "2", "BATCH_CONCURRENCY": "1", "TF_INTRA_OP_THREADS": "0"}, (1, 1, 0, 1, 2, 8)),
])
def test_default_layout_follows_the_cores_and_the_encoder(env, layout):
    config = load_config(env)
    keys = ("WORKERS", "BATCH_CONCURRENCY", "TF_INTRA_OP_THREADS", "TF_INTER_OP_THREADS", "ONNX_THREADS",
            "MAX_BATCH_SIZE")
    assert tuple(config[k] for k in keys) == layout
    assert config["THREADS"] >= config["MAX_BATCH_SIZE"] * config["BATCH_CONCURRENCY"]
