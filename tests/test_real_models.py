"""Real weights through HTTP: ImageNet labels for real photos, real text similarity, /models."""

from __future__ import annotations

import io

import numpy as np


def caption(client, data: bytes, **fields):
    resp = client.post("/caption", data={"image": (io.BytesIO(data), "photo"), **fields},
                       content_type="multipart/form-data")
    assert resp.status_code == 200, resp.json
    return resp.json["captions"][0]


def test_cat_photo_gets_cat_labels(real_client, photos):
    item = caption(real_client, photos["chelsea"], top_k=3)
    labels = [label["label"] for label in item["labels"]]
    assert {"tabby cat", "Egyptian Mau", "a cat having a striped coat"} & set(labels[:2])
    assert "cat" in item["caption"] or "Mau" in item["caption"]


def test_coffee_photo_gets_espresso(real_client, photos):
    item = caption(real_client, photos["coffee"])
    assert item["labels"][0]["label"] == "espresso" and item["labels"][0]["score"] > 0.5
    assert item["caption"] == "a photo of an espresso"


def test_rocket_and_motorcycle(real_client, photos):
    rocket = [label["label"] for label in caption(real_client, photos["rocket"])["labels"]]
    assert {"missile", "space shuttle"} & set(rocket[:4])


def test_text_similarity_reference(real_client):
    body = real_client.post("/encode", json={"texts": ["A man is eating food.",
                                                       "A man is eating a piece of bread."]}).json
    a, b = np.array(body["text_embeddings"])
    assert body["dims"] == {"image": 1280, "text": 384}
    assert abs(float(a @ b) - 0.755) <= 0.005


def test_models_reports_real_weights(real_client, model_dir):
    from models.weights import read_manifest

    manifest = read_manifest(model_dir)["models"]
    models = {m["name"]: m for m in real_client.get("/models").json["models"]}
    assert models["efficientnet_lite0"]["weights_sha256"] == manifest["efficientnet_lite0"]["sha256"]
    assert models["efficientnet_lite0"]["output_dim"] == 1280
    assert models["minilm_l6_v2"]["weights_sha256"] == manifest["minilm_l6_v2"]["sha256"]
    assert models["minilm_l6_v2"]["output_dim"] == 384


def test_json_and_multipart_give_the_same_real_embedding(real_client, photos):
    import base64

    as_json = real_client.post("/encode", json={"images": [base64.b64encode(photos["coffee"]).decode()]}).json
    multipart = real_client.post("/encode", data={"image": (io.BytesIO(photos["coffee"]), "c.png")},
                                 content_type="multipart/form-data").json
    np.testing.assert_allclose(as_json["image_embeddings"], multipart["image_embeddings"], atol=1e-6)
