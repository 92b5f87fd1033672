"""The benchmark's arithmetic (the ceiling over both thread layouts, the ratios over several rounds, the bounds
that the request path leaves) and the server it runs without the image model."""

import io

import numpy as np
import pytest
from PIL import Image

from bench.run import bounds, ceiling, cheapest_model_cpu_ms, ratios, round_figures


def _raw(whole_best: float, whole_b1_ms: float, layout_best: float, layout_b1_ms: float) -> dict:
    # As bench.raw writes it and json reads it back: batch sizes as string keys, the best one as an int.
    return {
        "images": {"1": {"per_s": 1000 / whole_b1_ms, "latency_ms": whole_b1_ms}, "8": {"per_s": whole_best}},
        "best_image_batch": 8,
        "server_layout": {"images": {"4": {"per_s": layout_best}}, "best_image_batch": 4,
                          "batch1_latency_ms": layout_b1_ms},
    }


def _levels(c8_per_s: float, c1_p50_ms: float) -> dict:
    return {1: {"req_per_s": 1000 / c1_p50_ms, "p50_ms": c1_p50_ms}, 8: {"req_per_s": c8_per_s, "p50_ms": 50.0}}


def test_ceiling_is_the_better_layout_for_each_figure():
    assert ceiling(_raw(180, 11.6, 236, 9.0)) == (236, 9.0)
    assert ceiling(_raw(48, 29.0, 47, 30.0)) == (48, 29.0)


def test_round_figures_against_the_ceiling_and_the_whole_machine():
    r = round_figures(_raw(180, 12.0, 240, 10.0), _levels(120, 15.0))
    assert r["server8_over_raw_best"] == 0.5
    assert r["server_p50_1_over_raw_batch1_latency"] == 1.5
    assert r["server8_over_whole_best"] == 120 / 180
    assert r["server_p50_1_over_whole_batch1_latency"] == 15.0 / 12.0


def test_ratios_report_the_median_and_range_of_the_rounds():
    rounds = [round_figures(_raw(100, 10.0, 100, 10.0), _levels(c8, p50))
              for c8, p50 in ((80, 12.0), (95, 11.0), (90, 14.0))]
    result = {"raw": _raw(100, 10.0, 100, 10.0), "server": {"levels": _levels(80, 12.0)},
              "naive": {"levels": _levels(20, 100.0)}, "rounds": rounds}
    out = ratios(result)
    assert out["server8_over_raw_best"] == 0.8  # the first round, as before
    assert out["server8_over_naive8"] == 4.0
    assert out["server8_over_raw_best_median"] == 0.9
    assert out["server8_over_raw_best_range"] == [0.8, 0.95]
    assert out["server_p50_1_over_raw_batch1_latency_median"] == 1.2
    assert out["server_p50_1_over_raw_batch1_latency_range"] == [1.1, 1.4]


def test_one_round_has_no_median():
    result = {"raw": _raw(100, 10.0, 100, 10.0), "server": {"levels": _levels(80, 12.0)},
              "rounds": [round_figures(_raw(100, 10.0, 100, 10.0), _levels(80, 12.0))]}
    assert "server8_over_raw_best_median" not in ratios(result)


def test_multipart_images_carries_each_jpeg_as_an_image_part():
    from werkzeug.test import EnvironBuilder

    from bench.load import multipart_images

    jpegs = [b"\xff\xd8\xff first", b"\xff\xd8\xff second\r\n--not-a-boundary", b"\xff\xd8\xff third"]
    body, content_type = multipart_images(jpegs)
    request = EnvironBuilder(method="POST", data=body, content_type=content_type).get_request()
    assert [part.read() for part in request.files.getlist("image")] == jpegs


def _with_cpu(raw: dict, whole_cpu_ms: float, layout_cpu_ms: float) -> dict:
    raw["images"]["8"]["cpu_ms_per_image"] = whole_cpu_ms
    raw["server_layout"]["images"]["4"]["cpu_ms_per_image"] = layout_cpu_ms
    return raw


def test_bounds_from_the_model_free_server_and_the_cheapest_bare_model():
    raw = _with_cpu(_raw(180, 12.0, 250, 8.0), whole_cpu_ms=11.0, layout_cpu_ms=8.0)
    assert cheapest_model_cpu_ms(raw) == 8.0
    no_model = {"levels": {1: {"p50_ms": 2.0, "server_cpu_ms_per_request": 2.1},
                           8: {"req_per_s": 600.0, "p50_ms": 12.0, "server_cpu_ms_per_request": 2.0}}}
    server = {"levels": {1: {"req_per_s": 80.0, "p50_ms": 12.5},
                         8: {"req_per_s": 160.0, "p50_ms": 50.0, "server_cpu_ms_per_request": 11.25}}}
    out = bounds({"raw": raw, "no_model": no_model, "server": server}, cpus=2)
    # 2 cores / (8 ms of model + 2 ms of request path) = 200 requests/s, against a ceiling of 250.
    assert out["max_server8_per_s"] == pytest.approx(200.0)
    assert out["max_server8_over_raw_best"] == pytest.approx(0.8)
    # At least the lone batch-1 latency (8 ms) plus the model-free server's p50 (2 ms).
    assert out["min_p50_1_over_raw_batch1_latency"] == pytest.approx(1.25)
    assert out["server8_cores_busy"] == pytest.approx(0.9)  # 160/s x 11.25 ms on 2 cores


def test_no_bounds_without_cpu_figures():
    raw = _raw(180, 12.0, 250, 8.0)  # an older run's raw figures, reused with --raw-from
    no_model = {"levels": {1: {"p50_ms": 2.0}, 8: {"req_per_s": 600.0, "server_cpu_ms_per_request": 2.0}}}
    assert cheapest_model_cpu_ms(raw) is None
    assert bounds({"raw": raw, "no_model": no_model, "server": {"levels": {}}}, cpus=2) is None


def _jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buf, "JPEG")
    return buf.getvalue()


def test_server_without_the_image_model_still_runs_the_request_path():
    from app import create_app
    from bench.no_model import without_image_model
    from tests.conftest import TINY_SIZE, make_tiny_registry

    registry = without_image_model(make_tiny_registry())
    seen = []
    preprocess = registry.image_encoder.preprocess  # the real encoder's, reached through the wrapper
    registry.image_encoder._encoder.preprocess = lambda image: seen.append(image.size) or preprocess(image)
    client = create_app({"TESTING": True}, registry=registry).test_client()
    try:
        answer = client.post("/encode", data={"image": [(io.BytesIO(_jpeg("red")), "a.jpg"),
                                                        (io.BytesIO(_jpeg("blue")), "b.jpg")]})
        assert answer.status_code == 200, answer.json
        embeddings = np.array(answer.json["image_embeddings"])
        assert embeddings.shape == (2, registry.image_encoder.feature_dim)
        assert np.allclose(embeddings, 1 / np.sqrt(registry.image_encoder.feature_dim))  # constant rows
        assert seen == [(96, 64), (96, 64)]  # each JPEG decoded and preprocessed as the server does
        assert registry.image_batcher.rows == 2  # through the batcher
        assert registry.image_encoder.input_size == TINY_SIZE
        bad = client.post("/encode", data={"image": [(io.BytesIO(b"\xff\xd8\xff broken"), "c.jpg")]})
        assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_image"
    finally:
        registry.close()
