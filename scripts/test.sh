#!/usr/bin/env bash
# Every check of `make test`, in order; stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
# hash of everything nbdev may write: the package and the notebooks (works without git too)
tree_hash() { find cascade_lab nbs -type f -not -path '*/__pycache__/*' -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum; }

step() { echo; echo "== $*"; }

step "nbdev-export leaves the tree unchanged (cascade_lab/ is in sync with nbs/)"
before=$(tree_hash); nbdev-export; after=$(tree_hash)
if [[ $before != "$after" ]]; then
  echo "FAIL: nbdev-export changed files: cascade_lab/ was out of sync with the notebooks."
  echo "      Edit the notebooks (never cascade_lab/ by hand), run nbdev-export and commit both."
  exit 1
fi

step "nbdev-clean leaves the tree unchanged (notebooks are clean)"
before=$(tree_hash); nbdev-clean; after=$(tree_hash)
if [[ $before != "$after" ]]; then
  echo "FAIL: nbdev-clean changed notebooks: run nbdev-clean and commit the result."
  exit 1
fi

# Without a GPU the Triton kernels run on the CPU under the interpreter (it must be on before triton loads).
if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then export TRITON_INTERPRET=1; fi

# Replaces `nbdev-test --n-workers 2`: runs every notebook once, with nbdev's own test runner (a failing cell
# fails here with its traceback; cells flagged slow or gpu are skipped), then checks the committed outputs.
step "notebooks run (nbdev-test's runner; slow and gpu cells skipped) and their committed outputs are current"
python scripts/nb_outputs.py --check --n-workers 2

# The browser tests (tests/test_lab.py) drive Debian's chromium through playwright; no browser is ever downloaded
# with `playwright install`. Installed here when missing and possible: apt-get present, and root or passwordless sudo.
# Otherwise those tests skip and say how to install it.
ensure_chromium() {
  [[ -x /usr/bin/chromium ]] && return 0
  local hint="the browser tests will skip; install it with: sudo apt-get install chromium"
  if ! command -v apt-get >/dev/null 2>&1; then echo "(no /usr/bin/chromium and no apt-get: $hint)"; return 0; fi
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"
    else echo "(no /usr/bin/chromium, and installing it needs root or passwordless sudo: $hint)"; return 0; fi
  fi
  step "installing Debian's chromium for the browser tests (apt-get; about 20 s)"
  local log; log=$(mktemp)
  # DPkg::Lock::Timeout: wait for another apt run to finish instead of failing on its lock
  local apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300"
  if $apt install -y chromium >"$log" 2>&1 || { $apt update >>"$log" 2>&1 && $apt install -y chromium >>"$log" 2>&1; }; then
    echo "installed: $(/usr/bin/chromium --version 2>/dev/null)"
  else
    tail -n 5 "$log"; echo "(could not install chromium: $hint)"
  fi
  rm -f "$log"
}
ensure_chromium

# The docs site: processed notebooks, the tutorials executed on the demo model, Sphinx with warnings as errors,
# every module's API entries and the page weights checked. tests/test_docs_site.py then checks its links and opens
# its pages in chromium; with CASCADE_LAB_DOCS_BUILT set, a missing site fails those tests instead of skipping them.
step "make docs: the documentation site builds (scripts/docs.py)"
python scripts/docs.py
export CASCADE_LAB_DOCS_BUILT=1

step "pytest tests/"
python -m pytest tests/ -q -p no:cacheprovider "$@"
