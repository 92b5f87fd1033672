"""IMAGE_RUNTIME=onnxruntime: the project's conversion, its checks, and the same answers as TensorFlow over HTTP."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from app import create_app  # noqa: E402
from config import load_config  # noqa: E402
from models import weights  # noqa: E402
from models.onnx_export import export  # noqa: E402

ENCODER = "efficientnet_lite0"


@pytest.fixture(scope="module")
def onnx_dir(model_dir, tmp_path_factory) -> str:
    """A MODEL_DIR beside the real one (files linked, manifest copied) with the Lite0 encoder converted."""
    out = tmp_path_factory.mktemp("onnx_model_dir")
    for name in os.listdir(model_dir):
        src = os.path.join(model_dir, name)
        if name == weights.MANIFEST:
            shutil.copy(src, out / name)
        elif name.endswith((".h5", ".json")) or os.path.isdir(src):
            os.symlink(src, out / name)
    manifest = weights.read_manifest(str(out))
    manifest.pop("onnx", None)  # convert here, whatever the real MODEL_DIR holds
    weights.write_manifest(str(out), manifest)
    export(str(out), ENCODER)
    return str(out)


@pytest.fixture(scope="module")
def onnx_client(onnx_dir):
    from models.loading import build_registry

    config = load_config({"MODEL_DIR": onnx_dir, "IMAGE_RUNTIME": "onnxruntime"})
    registry = build_registry(config)
    registry.warmup()
    yield create_app({"TESTING": True}, registry=registry).test_client()
    registry.close()


def test_export_records_a_checked_conversion_and_is_idempotent(onnx_dir, capsys) -> None:
    entry = weights.verify_onnx(onnx_dir, ENCODER)
    manifest = weights.read_manifest(onnx_dir)
    assert entry["source_sha256"] == manifest["models"][ENCODER]["sha256"]
    diffs = entry["max_differences_vs_tensorflow"]
    assert diffs["features_max_rel"] < 1e-4 and diffs["probs_max_abs"] < 1e-4 and diffs["top1_agree"] == 1.0
    path = os.path.join(onnx_dir, entry["file"])
    mtime = os.path.getmtime(path)
    export(onnx_dir, ENCODER)
    assert "up to date" in capsys.readouterr().out and os.path.getmtime(path) == mtime


def test_verify_onnx_refuses_missing_tampered_and_stale_files(onnx_dir, tmp_path) -> None:
    for name in os.listdir(onnx_dir):
        src = os.path.join(onnx_dir, name)
        if name == weights.MANIFEST or name.endswith(".onnx"):
            shutil.copy(os.path.realpath(src), tmp_path / name)
        else:
            os.symlink(os.path.realpath(src), tmp_path / name)
    good = weights.read_manifest(str(tmp_path))
    entry = weights.verify_onnx(str(tmp_path), ENCODER)
    assert weights.verify_onnx(str(tmp_path), ENCODER, weights.verify(str(tmp_path), [ENCODER])) == entry

    stale = {**good, "onnx": {ENCODER: {**good["onnx"][ENCODER], "source_sha256": "0" * 64}}}
    weights.write_manifest(str(tmp_path), stale)
    with pytest.raises(weights.WeightsError, match="other efficientnet_lite0 weights.*onnx_export"):
        weights.verify_onnx(str(tmp_path), ENCODER)
    with pytest.raises(weights.WeightsError, match="other efficientnet_lite0 weights"):  # weights checked by the caller
        weights.verify_onnx(str(tmp_path), ENCODER, weights.verify(str(tmp_path), [ENCODER]))

    weights.write_manifest(str(tmp_path), good)
    with open(tmp_path / f"{ENCODER}.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(weights.WeightsError, match="does not match the manifest's sha256"):
        weights.verify_onnx(str(tmp_path), ENCODER)
    with pytest.raises(weights.WeightsError, match="does not match the manifest's sha256"):
        weights.verify_onnx(str(tmp_path), ENCODER, weights.verify(str(tmp_path), [ENCODER]))

    weights.write_manifest(str(tmp_path), {k: v for k, v in good.items() if k != "onnx"})
    with pytest.raises(weights.WeightsError, match="holds no ONNX model.*onnx_export"):
        weights.verify_onnx(str(tmp_path), ENCODER)


def test_onnx_runtime_serves_the_same_embeddings_and_labels_as_tensorflow(onnx_client, real_client, photos) -> None:
    for key in ("chelsea", "coffee"):
        bodies = [client.post("/caption", data={"image": (io.BytesIO(photos[key]), "p"), "top_k": 3},
                              content_type="multipart/form-data").json for client in (onnx_client, real_client)]
        assert [label["label"] for label in bodies[0]["captions"][0]["labels"]] == \
            [label["label"] for label in bodies[1]["captions"][0]["labels"]]
        embeddings = [client.post("/encode", data={"image": (io.BytesIO(photos[key]), "p")},
                                  content_type="multipart/form-data").json["image_embeddings"]
                      for client in (onnx_client, real_client)]
        np.testing.assert_allclose(embeddings[0], embeddings[1], atol=1e-5)


def test_models_says_which_runtime_runs_the_image_encoder(onnx_client, real_client, onnx_dir) -> None:
    onnx_info = onnx_client.get("/models").json["models"][0]
    tf_info = real_client.get("/models").json["models"][0]
    assert onnx_info["runtime"] == "onnxruntime" and tf_info["runtime"] == "tensorflow"
    assert onnx_info["onnx_sha256"] == weights.verify_onnx(onnx_dir, ENCODER)["sha256"]
    assert onnx_info["weights_sha256"] == tf_info["weights_sha256"]


def test_batches_of_any_size_split_and_merge(onnx_client) -> None:
    registry = onnx_client.application.extensions["models"].registry
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (11, 224, 224, 3), dtype=np.uint8)
    features, probs = registry.image_encoder(pixels)
    assert features.shape == (11, 1280) and probs.shape == (11, 1000)
    one, _ = registry.image_encoder(pixels[7:8])
    np.testing.assert_allclose(features[7:8], one, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_runtime_settings_are_validated() -> None:
    assert load_config({})["IMAGE_RUNTIME"] == "tensorflow"
    assert load_config({"ONNX_SPINNING": "yes"})["ONNX_SPINNING"] is True
    with pytest.raises(ValueError, match="IMAGE_RUNTIME must be one of tensorflow, onnxruntime"):
        load_config({"IMAGE_RUNTIME": "tensorrt"})
    with pytest.raises(ValueError, match="ONNX_SPINNING must be true or false"):
        load_config({"ONNX_SPINNING": "maybe"})
