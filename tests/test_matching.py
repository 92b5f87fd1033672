"""Cross-modal meaning on real photos, through HTTP: the evaluation set's true captions come first."""

from __future__ import annotations

import io

import numpy as np
import pytest

from evaluation import load_eval_set
from evaluation.run import evaluate


@pytest.fixture(scope="module")
def evaluation(real_client):
    return evaluate(real_client, load_eval_set())


def test_fuse_ranks_a_true_caption_first_for_most_photos(evaluation):
    assert evaluation["photos"] >= 15
    assert evaluation["summary"]["match"]["top1_true"] >= 0.7
    assert evaluation["summary"]["match"]["reciprocal_rank"] >= 0.8


def test_similarity_beats_chance(evaluation):
    # Chance for top-1 is ~0.45 (2-3 true of 5-6); the shared space must do clearly better on MRR.
    assert evaluation["summary"]["similarity"]["reciprocal_rank"] >= 0.65


def test_caption_candidates_are_ranked_by_the_head(real_client, photos):
    texts = ["a cup of espresso on a saucer", "a glass of red wine", "a dog lying on a sofa"]
    resp = real_client.post("/caption", data={"image": (io.BytesIO(photos["coffee"]), "c.png"),
                                               "candidates": texts}, content_type="multipart/form-data")
    item = resp.json["captions"][0]
    assert item["ranked_by"] == "match" and item["ranked"][0]["text"] == texts[0]


@pytest.mark.parametrize(("photo", "words"), [("chelsea", ("cat", "Mau")), ("coffee", ("espresso",)),
                                              ("rocket", ("missile", "projectile", "rocket")),
                                              ("astronaut", ("helmet",))])
def test_captions_name_what_the_photo_shows(real_client, photos, photo, words):
    resp = real_client.post("/caption", data={"image": (io.BytesIO(photos[photo]), "p")},
                            content_type="multipart/form-data")
    caption = resp.json["captions"][0]["caption"]
    assert caption.startswith("a photo") and any(w in caption for w in words), caption


def test_match_is_a_probability_and_similarity_a_cosine(evaluation, real_client, photos):
    body = real_client.post("/fuse", data={"image": (io.BytesIO(photos["chelsea"]), "c"), "text": ["a cat", "a car"]},
                            content_type="multipart/form-data").json
    match, sim = np.array(body["match"]), np.array(body["similarity"])
    assert ((0 <= match) & (match <= 1)).all() and ((-1 <= sim) & (sim <= 1)).all()
    assert match[0, 0] > 0.5 > match[0, 1] and sim[0, 0] > sim[0, 1]


def test_class_embeddings_cache_survives_a_read_only_model_dir(tiny_registry, tmp_path):
    import os

    from models import bridge

    names = tiny_registry.class_names[:5]
    fresh = bridge.cached_class_embeddings(tiny_registry.text_encoder, names, str(tmp_path / "cache"))
    (cached,) = os.listdir(tmp_path / "cache")
    np.testing.assert_array_equal(np.load(tmp_path / "cache" / cached), fresh)
    np.testing.assert_array_equal(bridge.cached_class_embeddings(tiny_registry.text_encoder, names,
                                                                 str(tmp_path / "cache")), fresh)
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    again = bridge.cached_class_embeddings(tiny_registry.text_encoder, names, str(blocked / "cache"))
    np.testing.assert_allclose(again, fresh, atol=1e-6)
