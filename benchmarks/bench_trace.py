#!/usr/bin/env python
"""Benchmark of the trace file (`cascade_lab.trace`): save time, load time and size of a long trace.

The trace is `synthetic_trace` (made-up tokens, routing drawn with the router's rule) at the shape of a long
Nemotron-Cascade-2 run: by default 32,768 tokens, 23 MoE layers, top-6 of 128 experts, weights and scores
recorded, no router logits. Each run saves the trace (`Trace.save`: encode, write to a temporary file,
fsync, rename) and loads it back (`Trace.load`: read, check, decode, validate); the medians are compared with
the goals (save <= 1 s, load <= 1 s, file <= 25 MB, MB = 10^6 bytes). The in-memory halves (`to_bytes`,
`from_bytes`) are timed too, so the cost of the disk can be told apart. The loaded trace must equal the saved
one: the script exits 1 if it does not (and, with --strict, if a goal is missed).

    python benchmarks/bench_trace.py                       # the goals' shape
    python benchmarks/bench_trace.py --tokens 4096 --runs 3
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cascade_lab.trace import Trace, synthetic_trace

GOALS = {"save": 1.0, "load": 1.0, "size": 25.0}   # seconds, seconds, MB (10^6 bytes)


def _median_time(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--layers", type=int, default=23, help="MoE layers")
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each operation (the median is reported)")
    ap.add_argument("--dir", default=None, help="where to write the file (default: a temporary directory)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    a = ap.parse_args(argv)

    t = time.perf_counter()
    tr = synthetic_trace(a.tokens, a.layers, a.k, a.experts, seed=0)
    build_s = time.perf_counter() - t

    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        path = Path(d) / "bench.trace.safetensors"
        save_s, _ = _median_time(lambda: tr.save(path), a.runs)
        load_s, back = _median_time(lambda: Trace.load(path), a.runs)
        size = path.stat().st_size
        encode_s, data = _median_time(tr.to_bytes, a.runs)
        decode_s, _ = _median_time(lambda: Trace.from_bytes(data), a.runs)
    same = back == tr

    r = tr.routing
    arrays = {"token_ids": tr.token_ids, "logprobs": tr.logprobs, "entropies": tr.entropies,
              **{f"routing.{n}": getattr(r, n) for n in ("experts", "weights", "scores", "recorded") if getattr(r, n) is not None}}
    array_bytes = sum(v.nbytes for v in arrays.values())

    print(f"trace file benchmark: {a.tokens:,} tokens x {a.layers} MoE layers x top-{a.k} of {a.experts} experts "
          f"(weights + scores, no logits); median of {a.runs} runs")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"building the synthetic trace took {build_s:.2f} s (not timed below)")
    print()
    rows = [("save (Trace.save: encode + write + fsync + rename)", save_s, f"<= {GOALS['save']:.0f} s", save_s <= GOALS["save"]),
            ("load (Trace.load: read + check + decode + validate)", load_s, f"<= {GOALS['load']:.0f} s", load_s <= GOALS["load"]),
            ("file size", size / 1e6, f"<= {GOALS['size']:.0f} MB", size / 1e6 <= GOALS["size"])]
    print(f"| {'what':<52} | {'measured':>12} | {'goal':>9} | verdict |")
    print(f"|{'-' * 54}|{'-' * 14}|{'-' * 11}|---------|")
    for name, v, goal, ok in rows:
        unit = "MB" if name == "file size" else "s"
        print(f"| {name:<52} | {v:>9.3f} {unit:<2} | {goal:>9} | {'PASS' if ok else 'FAIL':<7} |")
    print()
    print(f"in memory: to_bytes {encode_s * 1e3:.1f} ms, from_bytes {decode_s * 1e3:.1f} ms "
          f"(so the disk's share of save is {max(0.0, save_s - encode_s) * 1e3:.1f} ms, of load {max(0.0, load_s - decode_s) * 1e3:.1f} ms)")
    print(f"file: {size:,} bytes = {size / 2**20:.2f} MiB; arrays {array_bytes:,} bytes, header (JSON) and padding {size - array_bytes:,} bytes")
    for name, v in arrays.items():
        print(f"  {name:<18} {str(v.dtype):<8} {str(v.shape):<18} {v.nbytes:>12,} bytes")
    logits_mb = a.tokens * a.layers * a.experts * 2 / 1e6
    print(f"  (router logits, when recorded, would add {logits_mb:,.1f} MB: float16 [{a.tokens}, {a.layers}, {a.experts}])")
    print(f"round trip: {'the loaded trace equals the saved one' if same else 'MISMATCH: the loaded trace differs'}")
    if not same: return 1
    if a.strict and not all(ok for *_, ok in rows): return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
