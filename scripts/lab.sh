#!/usr/bin/env bash
# `make lab`: JupyterLab on this repository for researchers. Listens on loopback only (127.0.0.1), behind a fresh
# random token that is printed in the URL, opens nbs/tutorials/quickstart.ipynb, starts no browser.
# LAB_PORT=N picks the port (default: the first free one from 8888 on). Extra arguments go to `jupyter lab`
# (`make lab LAB_ARGS="..."`). From another machine, tunnel (`ssh -L 8888:127.0.0.1:8888 host`); never open the IP.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
notebook=nbs/tutorials/quickstart.ipynb

# the port, chosen here so that the URL printed below is the one the server listens on
port=$(LAB_PORT=${LAB_PORT:-} "$PY" - <<'PYEOF'
import os, socket
want = os.environ["LAB_PORT"]
for port in ([int(want)] if want else range(8888, 8988)):
    with socket.socket() as s:
        try: s.bind(("127.0.0.1", port))
        except OSError: continue
        print(port); break
else: raise SystemExit(f"make lab: port {want} is taken" if want else "make lab: no free port in 8888-8987 on 127.0.0.1")
PYEOF
)
# The token travels in the environment, not on the command line, where `ps` would show it to other users.
JUPYTER_TOKEN=$("$PY" -c "import secrets; print(secrets.token_hex(24))")
export JUPYTER_TOKEN
args=(--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port="$port" --ServerApp.port_retries=0
      --ServerApp.root_dir="$PWD" --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate)
# Jupyter refuses to run as root without this flag; it is given only when running as root.
if [[ $(id -u) == 0 ]]; then args+=(--allow-root); fi
# Without a GPU, Triton kernels (nbs/05_kernels_moe.ipynb) run under the interpreter, as in `make test`.
if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then export TRITON_INTERPRET=1; fi

echo "cascade-lab: JupyterLab on http://127.0.0.1:$port (loopback only). Open:"
echo
echo "    http://127.0.0.1:$port/lab/tree/$notebook?token=$JUPYTER_TOKEN"
echo
echo "(Ctrl+C twice stops it)"
exec "$PY" -m jupyter lab "${args[@]}" "$@" "$notebook"
