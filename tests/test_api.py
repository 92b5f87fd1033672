"""The HTTP contract on the real factory with tiny models: success shapes, errors, both body formats."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json == {"status": "ok"}


def test_readyz_when_ready(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.json == {"status": "ready"}


def test_models_lists_each_model(client):
    models = client.get("/models").json["models"]
    assert [m["kind"] for m in models] == ["image", "text", "fusion"]
    for m in models:
        assert {"name", "architecture", "input_size", "output_dim", "weights_sha256"} <= set(m)
    assert models[0]["output_dim"] == 16 and models[1]["output_dim"] == 16


def test_encode_json(client, png_bytes):
    resp = client.post("/encode", json={"images": [b64(png_bytes), "data:image/png;base64," + b64(png_bytes)],
                                        "texts": ["a cat", "a dog", "x"]})
    assert resp.status_code == 200, resp.json
    body = resp.json
    assert body["dims"] == {"image": 16, "text": 16}
    images, texts = np.array(body["image_embeddings"]), np.array(body["text_embeddings"])
    assert images.shape == (2, 16) and texts.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(images[0], images[1], atol=1e-6)  # same picture, data-URL prefix or not


def test_encode_multipart_matches_json(client, png_bytes):
    multipart = client.post("/encode", data={"image": (io.BytesIO(png_bytes), "a.png"), "text": ["a cat"]},
                            content_type="multipart/form-data")
    as_json = client.post("/encode", json={"images": [b64(png_bytes)], "texts": ["a cat"]})
    assert multipart.status_code == 200, multipart.json
    np.testing.assert_allclose(multipart.json["image_embeddings"], as_json.json["image_embeddings"], atol=1e-6)
    np.testing.assert_allclose(multipart.json["text_embeddings"], as_json.json["text_embeddings"], atol=1e-6)


def test_encode_keeps_input_order(client):
    single = [client.post("/encode", json={"texts": [t]}).json["text_embeddings"][0] for t in ("one", "two words")]
    both = client.post("/encode", json={"texts": ["one", "two words"]}).json["text_embeddings"]
    np.testing.assert_allclose(both, single, atol=1e-5)


def test_encode_normalize_false_returns_raw_features(client, png_bytes):
    raw = np.array(client.post("/encode", json={"images": [b64(png_bytes)], "normalize": False})
                   .json["image_embeddings"])
    assert not np.allclose(np.linalg.norm(raw), 1.0)


def test_encode_shared_space_has_text_dims(client, png_bytes):
    body = client.post("/encode", json={"images": [b64(png_bytes)], "space": "shared"}).json
    assert body["dims"]["image"] == 16 and len(body["image_embeddings"][0]) == 16


def test_fuse_shapes_and_ranges(client, png_bytes):
    resp = client.post("/fuse", json={"images": [b64(png_bytes)] * 2, "texts": ["a", "b", "c"]})
    assert resp.status_code == 200, resp.json
    match, sim = np.array(resp.json["match"]), np.array(resp.json["similarity"])
    assert match.shape == (2, 3) and sim.shape == (2, 3)
    assert ((match >= 0) & (match <= 1)).all() and ((sim >= -1 - 1e-5) & (sim <= 1 + 1e-5)).all()


def test_caption_shape_and_candidates(client, png_bytes):
    resp = client.post("/caption", json={"images": [b64(png_bytes)], "top_k": 3,
                                         "candidates": ["a cat", "a rocket"]})
    assert resp.status_code == 200, resp.json
    (item,) = resp.json["captions"]
    assert len(item["labels"]) == 3 and item["caption"].startswith("a photo")
    scores = [label["score"] for label in item["labels"]]
    assert scores == sorted(scores, reverse=True)
    assert item["labels"][0]["label"] in item["caption"]
    ranked = [r["score"] for r in item["ranked"]]
    assert sorted(r["text"] for r in item["ranked"]) == ["a cat", "a rocket"] and ranked == sorted(ranked, reverse=True)


def test_caption_multipart_candidates(client, png_bytes):
    resp = client.post("/caption", data={"image": (io.BytesIO(png_bytes), "a.png"), "top_k": "2",
                                         "candidates": ["x", "y"]}, content_type="multipart/form-data")
    assert resp.status_code == 200, resp.json
    assert len(resp.json["captions"][0]["labels"]) == 2 and len(resp.json["captions"][0]["ranked"]) == 2


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/encode", {"json": {}}, 422, "no_inputs"),
        ("/encode", {"json": {"texts": [""]}}, 422, "empty_text"),
        ("/encode", {"json": {"texts": ["   \n"]}}, 422, "empty_text"),
        ("/encode", {"json": {"texts": "a cat"}}, 400, "invalid_field"),
        ("/encode", {"json": {"texts": [1]}}, 400, "invalid_field"),
        ("/encode", {"json": ["a"]}, 400, "invalid_json"),
        ("/encode", {"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ("/encode", {"data": "hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ("/encode", {"data": "hello"}, 415, "unsupported_media_type"),
        ("/encode", {"json": {"images": ["@@@not-base64@@@"]}}, 400, "invalid_base64"),
        ("/encode", {"json": {"images": [b64(b"not an image at all")]}}, 415, "unsupported_image_format"),
        ("/encode", {"json": {"images": [""]}}, 400, "empty_image"),
        ("/encode", {"json": {"images": [5]}}, 400, "invalid_field"),
        ("/encode", {"json": {"texts": ["a"], "normalize": "maybe"}}, 400, "invalid_field"),
        ("/encode", {"json": {"texts": ["a"], "space": "other"}}, 422, "invalid_space"),
        ("/fuse", {"json": {"texts": ["a"]}}, 422, "missing_inputs"),
        ("/caption", {"json": {"texts": ["a"]}}, 422, "missing_inputs"),
        ("/caption", {"json": {"images": ["AAAA"], "top_k": 0}}, 422, "invalid_top_k"),
        ("/caption", {"json": {"images": ["AAAA"], "top_k": 1001}}, 422, "invalid_top_k"),
        ("/caption", {"json": {"images": ["AAAA"], "top_k": "five"}}, 422, "invalid_top_k"),
        ("/caption", {"json": {"images": ["AAAA"], "candidates": "x"}}, 400, "invalid_field"),
    ],
)
def test_bad_requests_get_json_errors(client, path, kwargs, status, code):
    resp = client.post(path, **kwargs)
    assert resp.status_code == status, resp.json
    assert resp.json["error"]["code"] == code
    assert isinstance(resp.json["error"]["message"], str) and resp.json["error"]["message"]


def test_truncated_png_is_400(client, png_bytes):
    resp = client.post("/encode", json={"images": [b64(png_bytes[: len(png_bytes) // 2])]})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_image"


def test_routing_errors_are_json(client):
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.json["error"]["code"] == "not_found"
    resp = client.get("/encode")
    assert resp.status_code == 405 and resp.json["error"]["code"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]


def test_too_large_body_is_413(tiny_registry):
    from app import create_app

    client = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 1000}, registry=tiny_registry).test_client()
    resp = client.post("/encode", json={"texts": ["x" * 2000]})
    assert resp.status_code == 413 and resp.json["error"]["code"] == "payload_too_large"


def test_count_caps_are_422(tiny_registry):
    from app import create_app

    client = create_app({"TESTING": True, "MAX_IMAGES": 2, "MAX_TEXTS": 2}, registry=tiny_registry).test_client()
    assert client.post("/encode", json={"texts": ["a"] * 3}).json["error"]["code"] == "too_many_texts"
    assert client.post("/encode", json={"images": ["AAAA"] * 3}).json["error"]["code"] == "too_many_images"


def test_good_request_after_bad_ones_succeeds(client, png_bytes):
    for bad in ({"images": ["%%%"]}, {"images": [b64(b"\x89PNG\r\n\x1a\nbroken")]}, {"texts": [""]}):
        assert 400 <= client.post("/encode", json=bad).status_code < 500
    assert client.post("/encode", json={"images": [b64(png_bytes)], "texts": ["ok"]}).status_code == 200
