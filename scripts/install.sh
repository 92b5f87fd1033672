#!/usr/bin/env bash
# Installs the server into a virtual environment and converts the model weights. Used by `make serve`,
# `make test` and the Dockerfile alike.  Usage: scripts/install.sh [--dev]
# Env: VENV (default .venv), PYTHON (default python3), IMAGE_ENCODER, MODEL_DIR, RESNET50_WEIGHTS.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
files="requirements.txt requirements-nodeps.txt"
[ "${1:-}" = "--dev" ] && files="$files requirements-dev.txt"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.requirements.sha256"
want=$(cat $files | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
  # These declare heavy dependencies (torch) they do not need here: install them alone.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  if [ "${1:-}" = "--dev" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
  fi
  echo "$want" > "$stamp"
fi
TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} "$VENV/bin/python" -m models.weights install
