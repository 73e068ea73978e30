#!/usr/bin/env bash
# Creates .venv in the repo root if missing and installs cascade-lab with its dev extras.
# CPU machine: torch==2.13.0 (the CPU build) goes in first, so the package's torch range is already met.
# GPU machine: an installed CUDA torch is kept; with none, pip's default (CUDA) build is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
if [[ ! -x $VENV/bin/python ]]; then
  echo "cascade-lab setup: creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# (this machine's pip config names local package folders that may not exist: drop pip's notes about them)
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }

# Skip the install when nothing it depends on changed since the last successful one.
stamp=$VENV/.cascade-lab-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && "$VENV/bin/python" -c "import cascade_lab" 2>/dev/null; then
  exit 0
fi

has_gpu=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then has_gpu=1; fi
have_torch=$("$VENV/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null || true)
if [[ $has_gpu == 1 ]]; then
  if [[ -n $have_torch ]]; then
    echo "cascade-lab setup: GPU machine, keeping the installed torch $have_torch"
  else
    echo "cascade-lab setup: GPU machine, installing torch (CUDA build)"
    pip install torch
  fi
else
  if [[ $have_torch != 2.13.0* ]]; then
    echo "cascade-lab setup: no GPU, installing torch==2.13.0 (CPU build)"
    pip install torch==2.13.0
  fi
fi
echo "cascade-lab setup: installing cascade-lab[dev] (editable)"
pip install -e ".[dev]"
echo "$want" > "$stamp"
