#!/usr/bin/env python
"""Latency and stability benchmark of the Python sandbox (`cascade_lab.sandbox.PythonSandbox`).

Measures, with the sandbox's full isolation (whatever this machine allows; the report says which):

- kernel start: `PythonSandbox(...).start()` until the kernel answers, over several fresh sandboxes
  (the first start is shown apart: it pays for cold file caches);
- warm round trip: `run("print(1)")` on a started kernel, `--calls` times in a row (median, p90, max);
- stability over those calls: resident memory of the kernel and of this process after the first 10 calls and
  at the end, open file descriptors of this process, and zombie processes (children of this process or of
  the kernel) at the end.

Goals (issue 6): warm median <= 30 ms, start <= 3 s, memory flat (growth <= 10 MB over the calls) and no
zombies. Exit status 1 if the results are wrong, and with --strict also if a goal is missed.

    python benchmarks/bench_sandbox.py
    python benchmarks/bench_sandbox.py --calls 50 --starts 2     # a quick run
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import psutil

from cascade_lab.sandbox import PythonSandbox

GOALS = {"warm_median_ms": 30.0, "start_s": 3.0, "growth_mb": 10.0}


def _rss_mb(p: psutil.Process) -> float:
    return p.memory_info().rss / 2**20


def _zombies(*procs: psutil.Process) -> list[int]:
    out = []
    for p in procs:
        try: out += [c.pid for c in p.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess: pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200, help="warm print(1) calls in a row (default 200)")
    ap.add_argument("--starts", type=int, default=5, help="fresh sandboxes to time the start of (default 5)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    a = ap.parse_args(argv)
    if a.calls < 10 or a.starts < 1: ap.error("--calls must be >= 10 and --starts >= 1")
    me = psutil.Process()

    starts = []
    for _ in range(a.starts):
        t = time.perf_counter()
        with PythonSandbox() as sb:
            starts.append(time.perf_counter() - t)
            isolation = str(sb.isolation)
            if sb.run("print(1)").output != "1": print("FAIL: a fresh sandbox did not print 1"); return 1

    with PythonSandbox() as sb:
        supervisor = psutil.Process(sb.kernel_pid)     # the launched process; the kernel runs in its pid namespace below it
        kernel = next(p for p in supervisor.children(recursive=True) if 'ipykernel_launcher' in ' '.join(p.cmdline()))
        times, wrong = [], 0
        for i in range(a.calls):
            t = time.perf_counter()
            r = sb.run("print(1)")
            times.append(time.perf_counter() - t)
            wrong += r.output != "1" or r.error is not None
            if i == 9: k0, h0, fd0 = _rss_mb(kernel), _rss_mb(me), me.num_fds()
        k1, h1, fd1 = _rss_mb(kernel), _rss_mb(me), me.num_fds()
        zombies = _zombies(me, supervisor)
        same_kernel = sb.kernel_pid == supervisor.pid and kernel.is_running()

    ms = sorted(t * 1000 for t in times)
    med, p90 = statistics.median(ms), ms[int(0.9 * (len(ms) - 1))]
    later = statistics.median(starts[1:]) if len(starts) > 1 else starts[0]
    growth = max(k1 - k0, h1 - h0)
    print(f"isolation: {isolation}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), uid {os.getuid()}\n")
    print("| measure | value | goal |\n|---|---|---|")
    print(f"| kernel start, first | {starts[0]:.2f} s | <= {GOALS['start_s']:g} s |")
    print(f"| kernel start, median of the next {max(len(starts) - 1, 0)} | {later:.2f} s | <= {GOALS['start_s']:g} s |")
    print(f"| warm print(1) round trip, median of {a.calls} | {med:.1f} ms | <= {GOALS['warm_median_ms']:g} ms |")
    print(f"| warm round trip p90 / max | {p90:.1f} / {ms[-1]:.1f} ms | |")
    print(f"| kernel RSS after 10 calls -> after {a.calls} | {k0:.1f} -> {k1:.1f} MB | flat |")
    print(f"| this process RSS after 10 calls -> after {a.calls} | {h0:.1f} -> {h1:.1f} MB | flat |")
    print(f"| this process open fds after 10 calls -> after {a.calls} | {fd0} -> {fd1} | flat |")
    print(f"| zombie processes at the end | {len(zombies)} | 0 |")
    print(f"| wrong outputs | {wrong} | 0 |")
    ok = wrong == 0 and same_kernel
    met = (med <= GOALS["warm_median_ms"] and max(starts) <= GOALS["start_s"] and growth <= GOALS["growth_mb"]
           and not zombies and fd1 <= fd0)
    print(f"\nresults {'correct' if ok else 'WRONG'}; goals {'met' if met else 'MISSED'}")
    return 0 if ok and (met or not a.strict) else 1


if __name__ == "__main__":
    sys.exit(main())
