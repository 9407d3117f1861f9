#!/usr/bin/env bash
# Set up ganfast for development on a fresh machine: a venv with torch, the package (editable,
# with its C++ CPU extension built against that torch) and the test/bench extras. Idempotent.
#   GANFAST_VENV   where the venv goes (default .venv in the repo root)
#   GANFAST_TORCH  the torch requirement (default torch==2.13.0: the CPU wheel; a bare `torch`
#                  would pull a multi-GB CUDA build). On a GPU machine: GANFAST_TORCH=torch
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GANFAST_VENV:-.venv}"
TORCH_REQ="${GANFAST_TORCH:-torch==2.13.0}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
if ! python -c "import torch" 2>/dev/null; then
  echo "[setup] installing $TORCH_REQ"
  python -m pip install -q "$TORCH_REQ"
fi
# Build tools first: the extension is built with --no-build-isolation against the torch above.
python -m pip install -q ninja pybind11 setuptools wheel
echo "[setup] installing ganfast (editable) with its CPU extension"
python -m pip install -q --no-build-isolation -e ".[test,bench,tensorboard]"
python -c "import ganfast, json; from ganfast._ext import build_info; print('[setup] extension build:', json.dumps({k: v.get('built') for k, v in build_info().items() if isinstance(v, dict)}))"
