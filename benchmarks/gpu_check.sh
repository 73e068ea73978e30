#!/usr/bin/env bash
# The ONE prepared GPU check of the MoE kernels. Run it from anywhere in the repo on a machine with an
# NVIDIA GPU (no network needed; what the machine needs, packages and versions: benchmarks/README.md):
#
#   bash benchmarks/gpu_check.sh                      # everything lands in ${OUT:-/tmp/gpu_out}
#   GPU_CHECK_BUDGET_S=570 OUT=/somewhere bash benchmarks/gpu_check.sh
#
# Steps, each under `timeout` and all inside one budget (GPU_CHECK_BUDGET_S, default 570 s, so the whole
# script fits in ten minutes; the steps' limits shrink when time runs short):
#   0. Python: the script installs nothing from the network (the machine may have none) and never uses the
#      repo's .venv (on a machine without a GPU `make` fills it with a CPU build of torch). It uses the
#      first Python whose torch sees CUDA: $GPU_PYTHON, then a virtual environment under /opt (/opt/*/.venv,
#      where CUDA images often keep theirs), then python3. When no such Python exists it STOPS with a message and exit
#      status 3. Wheels put in .whl/ (see benchmarks/README.md: e.g. the transformers version the project pins,
#      or nbdev + execnb) are installed to /tmp/site first and put ahead of that Python's packages.
#   1. The repo is made importable: `pip install -e . --no-deps --no-build-isolation` into that Python when
#      it works (it may not: no network, old setuptools), and PYTHONPATH=<repo> in any case.
#   2. nbdev-test --flags gpu over the notebooks that have `#| gpu` cells (skipped, with a note, when there are
#      none or nbdev/execnb are not importable).
#   3. python -m pytest tests/test_kernels_moe.py (natively on the GPU: no interpreter).
#   4. benchmarks/tune_moe.py --budget-s 240 (less when the budget is short): writes the tuned table to
#      cascade_lab/kernels/configs/E=128,N=1856,device_name=<GPU>.json.
#   5. benchmarks/bench_moe.py --results $OUT/RESULTS.md: kernel table, goals, whole-model decode figure.
#   6. Copies the tuned JSON to $OUT/configs/ under a safe name (letters, digits, '.', '_' and '-' only, so
#      that any copying tool takes it; the real name is in summary.txt) and writes the summary.
# $OUT receives at most 4 files: gpu_check.log (all output), summary.txt, RESULTS.md, configs/<one>.json.
# To publish: copy $OUT/RESULTS.md to benchmarks/RESULTS.md and the JSON, renamed back to its real name, to
# cascade_lab/kernels/configs/.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT" "$OUT/configs"
LOG="$OUT/gpu_check.log"
SUMMARY="$OUT/summary.txt"
: >"$LOG"
: >"$SUMMARY"
BUDGET=${GPU_CHECK_BUDGET_S:-570}
TUNE_MAX=${GPU_CHECK_TUNE_S:-240}
BENCH_RESERVE=${GPU_CHECK_BENCH_RESERVE_S:-200}   # kept for the benchmark (kernel table + decode)
T0=$SECONDS
FAILED=0

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 \
  TOKENIZERS_PARALLELISM=false
unset TRITON_INTERPRET            # the kernels must run natively on the GPU

log() { echo "[gpu_check +$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - (SECONDS - T0))); }
record() { printf '%-34s %s\n' "$1" "$2" >>"$SUMMARY"; }

finish() {
  log "== summary ($((SECONDS - T0)) s of a ${BUDGET} s budget)"
  {
    echo
    echo "-- goals and figures (from the benchmark):"
    grep -E '^(GOAL |decode: batch|T=[0-9]+ +best|T=[0-9]+ +no candidate|wrote .*json)' "$LOG" || echo "(none: see gpu_check.log)"
  } >>"$SUMMARY"
  tee -a "$LOG" <"$SUMMARY"
  exit "$1"
}

# step NAME LIMIT_S CMD...: run CMD under timeout (limit cut to what the budget has left), log it, record it
step() {
  local name=$1 limit=$2
  shift 2
  local rem=$(($(left) - 10))
  ((limit > rem)) && limit=$rem
  if ((limit < 20)); then
    record "$name" "SKIPPED: out of time budget"
    log "== $name: skipped, out of time budget"
    return 0
  fi
  log "== $name (limit ${limit}s): $*"
  local t=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  case $rc in
    0) record "$name" "OK ($((SECONDS - t)) s)" ;;
    124 | 137) record "$name" "TIMEOUT after ${limit} s"; FAILED=1 ;;
    *) record "$name" "FAILED: exit $rc ($((SECONDS - t)) s)"; FAILED=1 ;;
  esac
  return 0
}

# ---- 0. a Python whose torch sees the GPU -----------------------------------------------------------
log "== environment"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
else
  log "nvidia-smi: not found"
fi
PY=""
for cand in "${GPU_PYTHON:-}" /opt/*/.venv/bin/python3 python3 python; do
  [[ -n $cand ]] || continue
  path=$(command -v "$cand" 2>/dev/null) || continue
  case $path in "$REPO"/.venv/*) continue ;; esac          # the repo's venv has CPU torch
  if timeout 120 "$path" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
    PY=$path
    break
  fi
  log "   $path: no CUDA torch there"
done
if [[ -z $PY ]]; then
  record "python with CUDA torch" "NONE FOUND"
  log "STOP: no Python on this machine has a torch that sees a CUDA GPU, and none can be installed (no network)."
  log "      Set GPU_PYTHON to one that does, or carry a CUDA torch as wheels in .whl/ (benchmarks/README.md)."
  finish 3
fi
record "python" "$PY"

if compgen -G ".whl/*.whl" >/dev/null; then
  log "installing carried wheels from .whl/ into /tmp/site"
  if timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl >>"$LOG" 2>&1; then
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    record "carried wheels" "installed: $(cd .whl && printf '%s ' ./*.whl)"
  else
    record "carried wheels" "FAILED to install (see log)"
  fi
fi

# ---- 1. the repo importable -------------------------------------------------------------------------
if timeout 120 "$PY" -m pip install -q -e . --no-deps --no-build-isolation >>"$LOG" 2>&1; then
  record "pip install -e . --no-deps" "OK"
else
  record "pip install -e . --no-deps" "not possible here (see log); using PYTHONPATH"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib.util, platform, torch, triton, transformers
print(f"python {platform.python_version()}  torch {torch.__version__} (CUDA {torch.version.cuda})  "
      f"triton {triton.__version__}  transformers {transformers.__version__}")
print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, "
      f"capability {torch.cuda.get_device_capability(0)}")
for m in ("hypothesis", "pytest", "pytest_timeout", "nbdev", "execnb", "vllm", "mamba_ssm", "causal_conv1d"):
    print(f"  {m:15s} {'present' if importlib.util.find_spec(m) else 'absent'}")
# the package's pure-Python runtime dependencies: a machine without network may lack them (the 2026-11-30 H200
# lacked fastcore, so the routing recorder could not be measured): carry their wheels in .whl/
missing = [m for m in ("fastcore", "safetensors", "jinja2", "numpy", "tqdm") if importlib.util.find_spec(m) is None]
if missing:
    print(f"WARNING: missing runtime dependencies {', '.join(missing)}: put their wheels in .whl/ "
          f"(`pip download {' '.join(missing)} --no-deps -d .whl` where there is network); parts that import them fail")
import cascade_lab  # registers cascade_triton
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
print("cascade_triton registered with transformers:", "cascade_triton" in ALL_EXPERTS_FUNCTIONS)
from cascade_lab.kernels.moe import triton_unavailable_reason, device_name
print("triton on cuda:", triton_unavailable_reason("cuda") or "OK", "| tuned-config key:", device_name("cuda"))
EOF
record "versions" "$(grep -m1 '^python ' "$LOG")"

# ---- 2. notebooks -----------------------------------------------------------------------------------
# only the notebooks that have `#| gpu` cells: the others ran in CI already, and some need packages
# (jupyter_client, math-verify) that the GPU machine's Python may lack
GPU_NBS=$(grep -l '"#| *gpu' nbs/*.ipynb 2>/dev/null | xargs -r -n1 basename | sed 's/\.ipynb$//' | paste -sd'|' -)
if [[ -z $GPU_NBS ]]; then
  record "nbdev-test --flags gpu" "SKIPPED: no notebook has #| gpu cells"
  log "== nbdev-test: skipped (no notebook has #| gpu cells)"
elif "$PY" -c 'import nbdev, execnb' >/dev/null 2>&1; then
  step "nbdev-test --flags gpu" 150 "$PY" -c \
    'import sys; from nbdev.test import nbdev_test; sys.argv[0] = "nbdev-test"; sys.exit(nbdev_test())' \
    --flags gpu --n-workers 4 --file-re "^(${GPU_NBS})\.ipynb$"
else
  record "nbdev-test --flags gpu" "SKIPPED: nbdev/execnb not importable here (carry them as wheels to run it)"
  log "== nbdev-test: skipped (nbdev/execnb not importable with $PY)"
fi

# ---- 3. kernel tests --------------------------------------------------------------------------------
step "pytest tests/test_kernels_moe.py" 180 "$PY" -m pytest tests/test_kernels_moe.py -q -p no:cacheprovider

# ---- 4. tuning --------------------------------------------------------------------------------------
tune_s=$(($(left) - BENCH_RESERVE - 60))
((tune_s > TUNE_MAX)) && tune_s=$TUNE_MAX
if ((tune_s >= 60)); then
  step "tune_moe.py --budget-s $tune_s" $((tune_s + 60)) "$PY" benchmarks/tune_moe.py --budget-s "$tune_s"
else
  record "tune_moe.py" "SKIPPED: only $(left) s left: tuning needs 60 s beyond the ${BENCH_RESERVE} s kept for the benchmark"
fi

# ---- 5. benchmark -----------------------------------------------------------------------------------
bench_s=$(($(left) - 15))
step "bench_moe.py" "$bench_s" "$PY" benchmarks/bench_moe.py --results "$OUT/RESULTS.md" --budget-s $((bench_s - 20))
if [[ -f $OUT/RESULTS.md ]]; then record "RESULTS.md" "written"; else record "RESULTS.md" "MISSING"; fi

# ---- 6. tuned configs -------------------------------------------------------------------------------
shopt -s nullglob
for f in cascade_lab/kernels/configs/*.json; do
  name=$(basename "$f")
  safe=$(printf '%s' "$name" | tr -c 'A-Za-z0-9._-' '_')
  cp "$f" "$OUT/configs/$safe"
  record "tuned config" "configs/$safe  <- cascade_lab/kernels/configs/$name"
done

finish $FAILED
