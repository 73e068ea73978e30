"""The kernel workbench scripts as CI can run them, on a CPU: `benchmarks/bench_moe.py --cpu` (the torch experts
backends, and our Triton kernels under the interpreter, must agree), `benchmarks/bench_moe.py --dry-run-cpu`
(the GPU mode's code at tiny shapes) and `benchmarks/tune_moe.py` (must refuse: tuning needs a GPU). Each runs
in a subprocess, as a person runs it; about 45 s in all."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ON_GPU = torch.cuda.is_available()


def run(*args, timeout=120, **env):
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=e)


def test_bench_cpu_short_mode_agrees():
    r = run("benchmarks/bench_moe.py", "--cpu", TRITON_INTERPRET="1")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "CPU timings say NOTHING about GPU performance" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("AGREE ")]
    for T in (1, 8, 64):
        for b in ("eager", "batched_mm", "grouped_mm"):
            assert any(f"T={T} {b} vs moe_reference" in ln and ln.endswith(" OK") for ln in lines), (T, b, out)
    # with the interpreter on, our kernels (both paths, and the registered backend) are checked too
    assert any("fused_moe GEMV path (interpreter)" in ln and ln.endswith(" OK") for ln in lines), out
    assert any("fused_moe grouped-GEMM path (interpreter)" in ln and ln.endswith(" OK") for ln in lines), out
    assert any("cascade_triton backend (interpreter) vs eager" in ln and ln.endswith(" OK") for ln in lines), out
    assert not any(ln.endswith(" FAIL") for ln in lines)
    assert f"all {len(lines)} agreement checks passed" in out


@pytest.mark.skipif(ON_GPU, reason="on a GPU machine tune_moe.py tunes instead of refusing")
def test_tune_refuses_without_a_gpu():
    r = run("benchmarks/tune_moe.py", timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "tuning needs a CUDA GPU" in r.stderr
    assert "gpu_check.sh" in r.stderr
    assert not list((REPO / "cascade_lab" / "kernels" / "configs").glob("*device_name=cpu*.json"))


def test_bench_gpu_code_dry_run_on_cpu(tmp_path):
    # the GPU mode's table, goals and markdown, at tiny shapes on CPU under the interpreter (both kernel paths)
    res = tmp_path / "RESULTS.md"
    r = run("benchmarks/bench_moe.py", "--dry-run-cpu", "--no-decode", "--tokens", "1,64", "--results", str(res))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "GOAL PASS ours matches moe_reference" in r.stdout
    text = res.read_text()
    assert "DRY RUN" in text and "| T | experts touched | ours us |" in text and "## Goals" in text


def test_bench_sandbox_quick_run():
    r = run("benchmarks/bench_sandbox.py", "--calls", "20", "--starts", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warm print(1) round trip, median of 20" in r.stdout and "results correct" in r.stdout
    assert "| zombie processes at the end | 0 | 0 |" in r.stdout


def test_bench_widgets_quick_python_figures():
    # the widgets benchmark's Python half: build time and bytes for the browser of each widget, each with its verdict
    import re
    r = run("benchmarks/bench_widgets.py", "--quick", "--no-browser", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for w in ("RoutingExplorer top1", "RoutingExplorer full", "ThinkingViewer", "TIRStepper"):
        assert re.search(rf"^(PASS|FAIL)  build {w} +synthetic_trace\(32768\): \d+\.\d+ s median, .*\(goal <= 0\.2 s\)$", out, re.M), (w, out)
        assert re.search(rf"^(PASS|FAIL)  build {w} +demo_tir_0\.0\.1 \(507 tokens\): \d+\.\d+ s median", out, re.M), (w, out)
    for w, goal in (("RoutingExplorer top1", 2), ("RoutingExplorer full", 10)):
        assert re.search(rf"^(PASS|FAIL)  bytes {w} +synthetic_trace\(32768\): \d+\.\d+ MB \(binary .*_esm \+ _css [\d.]+ kB apart "
                         rf"\(goal <= {goal} MB\)$", out, re.M), (w, out)
    assert "(browser figures skipped: --no-browser)" in out and "== summary:" in out
    assert "ERROR" not in out
