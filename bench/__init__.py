"""Benchmarks: `python -m bench.run` (see bench/run.py). Nothing here is a test."""
