"""Lint as part of the suite: ruff on the code, hadolint on the Dockerfile (no Docker engine runs here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("command", [["ruff", "check", "--output-format", "concise", "."],
                                     ["hadolint", "--no-color", "--failure-threshold", "warning", "Dockerfile"]])
def test_lint_is_clean(command):
    tool = os.path.join(BIN, command[0])
    if not os.path.exists(tool):
        pytest.fail(f"{command[0]} is not installed in {BIN}: run `make install-dev`")
    result = subprocess.run([tool, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_image_installs_with_the_same_script_as_make_serve():
    with open(os.path.join(ROOT, "Dockerfile"), encoding="utf-8") as f:
        dockerfile = f.read()
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        makefile = f.read()
    assert "scripts/install.sh --deps-only" in dockerfile and "scripts/install.sh --weights-only" in dockerfile
    assert "scripts/install.sh" in makefile
    assert "--preload" not in dockerfile and "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile
