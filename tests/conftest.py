"""Shared test setup. Without a GPU the Triton kernels can only run under the interpreter, which triton
decides when a kernel is decorated: so the variable is set here, before any test module imports triton."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


if not _has_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def loopback_listener() -> socket.socket:
    """A TCP listener on 127.0.0.1 at a port below the ephemeral range. A sandbox's check that it cannot reach the
    host's listener connects to that port number in its own network namespace, where nothing listens; with a port
    from the ephemeral range, Linux may pick the same number as the source port and connect the socket to itself
    (TCP self-connect: about 1 in 3000 here), which reads as "reached"."""
    import random
    try: low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError): low = 32768
    for _ in range(200):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", random.randrange(10000, max(10001, low))))
            s.listen()
            return s
        except OSError: s.close()
    raise RuntimeError("no free port below the ephemeral range")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    "`transformers serve` with the shipped demo model on loopback: a real OpenAI-compatible server, for the session."
    from cascade_lab.demo import DEMO_DIR
    serve = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if serve is None: pytest.skip("the `transformers` command is not installed (pip install 'transformers[serving]')")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([serve, "serve", str(DEMO_DIR), "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}): {proc.stdout.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if json.load(r).get("status") == "ok": break
            except OSError: time.sleep(0.5)
        else: pytest.fail("transformers serve did not come up within 120 s")
        yield url
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()


@pytest.fixture(autouse=True)
def sigint_handler_kept():
    """Every test leaves the process's SIGINT handler as it found it. A library that swaps it (for SIG_IGN, or a
    handler of its own) and is not given it back silently breaks Ctrl-C for what runs later: `_thread.interrupt_main`
    does nothing when SIGINT is not handled by Python, and a test of Ctrl-C would fail far from the cause. This
    names the test that changed it. (A process started with SIGINT ignored, as a shell's background job is, is
    not a test's doing: the Ctrl-C test installs Python's handler itself.)"""
    import signal
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)          # give it back, so the tests after this one run as they should
        pytest.fail(f"this test left the SIGINT handler changed: {before!r} -> {after!r}")
