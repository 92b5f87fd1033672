#!/usr/bin/env bash
# Installs the server into a virtual environment and converts the model weights. Used by `make serve`,
# `make test` and the Dockerfile alike.
# Usage: scripts/install.sh [--dev] [--deps-only | --weights-only]
# Env: VENV (default .venv), PYTHON (default python3), IMAGE_ENCODER, MODEL_DIR, RESNET50_WEIGHTS,
# IMAGE_RUNTIME (onnxruntime: also install ONNX Runtime and convert the image encoder; --dev always installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
dev=0 deps=1 weights=1
onnx=0
[ "${IMAGE_RUNTIME:-tensorflow}" = onnxruntime ] && onnx=1
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
  [ "$dev" = 1 ] || [ "$onnx" = 1 ] && files="$files requirements-onnx.txt"
  stamp="$VENV/.requirements.sha256"
  want=$(cat $files | sha256sum | cut -d' ' -f1)
  # Re-running is fast: pip only runs when a requirements file changed.
  if ! grep -qx "$want" "$stamp" 2>/dev/null; then
    pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir)
    "${pip[@]}" -r requirements.txt
    # These declare heavy dependencies (torch) that the server never imports: install them alone.
    "${pip[@]}" --no-deps -r requirements-nodeps.txt
    [ "$dev" = 1 ] && "${pip[@]}" -r requirements-dev.txt
    case " $files " in *" requirements-onnx.txt "*) "${pip[@]}" -r requirements-onnx.txt ;; esac
    echo "$want" >> "$stamp"
  fi
fi
if [ "$weights" = 1 ]; then
  export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
  "$VENV/bin/python" -m models.weights install
  # The default fusion head, trained by the project's own command (skipped when up to date).
  "$VENV/bin/python" -m models.default_head
  # ONNX Runtime serves the same weights once converted (and checked against TensorFlow) by this command.
  if [ "$onnx" = 1 ]; then "$VENV/bin/python" -m models.onnx_export; fi
fi
