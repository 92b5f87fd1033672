"""The benchmark's arithmetic: the ceiling over both thread layouts, and the ratios over several rounds."""

from bench.run import ceiling, ratios, round_figures


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
