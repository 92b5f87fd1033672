"""Large non-JPEG decodes are limited per worker, so concurrent big uploads cannot add up in memory."""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image

from app import images
from tests.conftest import PeakConcurrency


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, "PNG")
    return buf.getvalue()


def test_at_most_two_large_decodes_run_at_once():
    big = _png(3000, 3000)  # 9 MP, above LARGE_PIXELS, a few KB compressed
    decodes = PeakConcurrency()

    def slow_preprocess(image):
        decodes.hold(0.05)
        return np.asarray(image.resize((8, 8)))

    def decode():
        out = images.decode_and_preprocess(big, max_pixels=40_000_000, min_side=0, preprocess=slow_preprocess)
        assert out.shape == (8, 8, 3)

    threads = [threading.Thread(target=decode) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert decodes.peak == 2


def test_small_images_are_not_limited():
    small = _png(200, 100)
    barrier = threading.Barrier(4, timeout=5)

    def preprocess(image):
        barrier.wait()  # passes only if all four run at once
        return image.size

    results = []
    threads = [threading.Thread(target=lambda: results.append(images.decode_and_preprocess(
        small, max_pixels=40_000_000, min_side=0, preprocess=preprocess))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [(200, 100)] * 4
