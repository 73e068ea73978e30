#!/usr/bin/env python
"""Tune the launch configurations of our Triton MoE kernels for the real shape on this GPU.

For the real routed-experts shape (E=128 experts, I=1856, H=2688, top-6, bf16) and each token count T of
the benchmark (1 ... 4096), time a pruned grid of `MoEConfig` candidates - the GEMV ("decode") path for
T <= 16 (BLOCK_N, BLOCK_K, num_warps, num_stages) and the grouped-GEMM path (BLOCK_M 16/32/64/128,
BLOCK_N 32/64/128, BLOCK_K 64/128, GROUP_M 1/8/16, num_warps 4/8, num_stages 2/3/4, pruned) - check each
T's winner against `moe_reference`, and write the table with `save_tuned_configs` into
cascade_lab/kernels/configs/ (package data; `get_moe_config` reads it, keyed by the GPU's name).

Time: the candidates are first compiled in parallel worker processes (Triton's on-disk cache then serves
the timing process), then timed with `triton.testing.do_bench`; --budget-s caps the whole run (default 240 s):
token counts not reached in time get the default config, written explicitly so that the nearest-entry
lookup never hands a large batch a decode config.

Needs a CUDA GPU: on a machine without one it exits with status 2. --dry-run-cpu runs the search at tiny
shapes under the Triton interpreter (and writes to a temporary folder) so the code path can be checked.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if "--dry-run-cpu" in sys.argv[1:]:
    os.environ.setdefault("TRITON_INTERPRET", "1")   # the interpreter must be on before triton is imported

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(HERE), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

DEFAULT_OUT = REPO / "cascade_lab" / "kernels" / "configs"
NO_GPU = ("tune_moe.py: tuning needs a CUDA GPU: launch configurations are chosen by timing the kernels on the "
          "GPU they will run on, and {why}. Run it on a GPU machine (benchmarks/gpu_check.sh does); "
          "--dry-run-cpu only exercises the search at tiny shapes under the Triton interpreter.")

SMEM_LIMIT = 200 * 1024       # bytes of shared memory a candidate may ask for (H100/H200: 227 KB per block)


# ---- the candidate grid -------------------------------------------------------------------------------
def decode_candidates():
    "GEMV path: one program per (pair, BLOCK_N slice); the [BLOCK_N, BLOCK_K] tile lives in registers."
    from cascade_lab.kernels.moe import MoEConfig
    out = []
    for warps, stages in ((4, 2), (4, 4), (8, 2), (8, 4)):
        for bn in (16, 32, 64, 128):
            for bk in (64, 128, 256):
                if bn * bk <= 2048 * warps:      # at most 64 fp32 tile values per thread
                    out.append(MoEConfig(decode=True, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages))
    return out


def block_m_options(T: int, E: int, k: int):
    "BLOCK_M values worth trying: around the expected number of (token, expert) pairs per touched expert."
    touched = E * (1 - (1 - k / E) ** T)
    per_expert = T * k / max(touched, 1)
    np2 = 2 ** math.ceil(math.log2(max(per_expert, 1)))
    hi, lo = max(16, np2 * 2), min(64, max(16, np2 // 2))
    return [bm for bm in (16, 32, 64, 128) if lo <= bm <= hi]


def gemm_candidates(T: int, E: int, k: int, esize: int = 2):
    "Grouped-GEMM path, pruned: pipeline depth tied to BLOCK_K, warps to the tile size, GROUP_M to the M-block count."
    from cascade_lab.kernels.moe import MoEConfig
    out = []
    groups = (1,) if T <= 64 else (1, 8) if T <= 512 else (8, 16)
    for bm in block_m_options(T, E, k):
        for bn in (32, 64, 128):
            for bk in (64, 128):
                for stages in ((3, 4) if bk == 64 else (2, 3)):
                    if stages * (bm * bk + bk * bn) * esize > SMEM_LIMIT:
                        continue
                    tile = bm * bn
                    for warps in ((4,) if tile <= 4096 else (4, 8) if tile <= 8192 else (8,)):
                        for g in groups:
                            out.append(MoEConfig(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=g, num_warps=warps,
                                                 num_stages=stages))
    return out


def candidates_for(T: int, E: int, k: int, default, esize: int = 2):
    "Default first, then the GEMV grid (T <= 16) and the GEMM grid, nearest-to-default first."
    pool = (decode_candidates() if T <= 16 else []) + gemm_candidates(T, E, k, esize)

    def distance(c):
        return (c.decode != default.decode, abs(math.log2(c.BLOCK_N) - math.log2(default.BLOCK_N)),
                abs(math.log2(c.BLOCK_K) - math.log2(default.BLOCK_K)), c.num_warps != default.num_warps,
                c.num_stages != default.num_stages, c.BLOCK_M, c.GROUP_M)
    rest = sorted((c for c in dict.fromkeys(pool) if c != default), key=distance)
    return [default] + rest


# ---- parallel compilation -----------------------------------------------------------------------------
def _compile_worker(job):
    """Runs in a spawned process: launch each config once on a small problem with the real strides, so that
    Triton compiles the same specialisations the timing process will ask for and leaves them in its disk cache."""
    cfg_dicts, dims, dtype_name, device = job
    import torch
    from cascade_lab.kernels.moe import MoEConfig, fused_moe
    dtype = getattr(torch, dtype_name)
    H, I, k = dims
    dev = torch.device(device)        # "cpu" only in --dry-run-cpu (the interpreter: nothing is cached there)
    E = 2                                 # strides do not depend on E; 2 experts keep the worker's memory small
    up = torch.zeros(E, I, H, dtype=dtype, device=dev)
    down = torch.zeros(E, H, I, dtype=dtype, device=dev)
    probs = {}
    for T in (1, 32):                     # P = 6 (not a multiple of 16) and P = 192 (one; >= every BLOCK_M)
        probs[T] = (torch.zeros(T, H, dtype=dtype, device=dev), torch.randint(0, E, (T, k), device=dev),
                    torch.ones(T, k, dtype=torch.float32, device=dev))
    done = []
    for d, Ts in cfg_dicts:
        cfg = MoEConfig(**d)
        try:
            for T in Ts:
                fused_moe(*probs[T][:1], up, down, *probs[T][1:], config=cfg)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            done.append((d, None))
        except Exception as e:  # e.g. out of shared memory: the timing process will skip it too
            done.append((d, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}"))
    return done


def precompile(jobs, dims, dtype_name: str, device: str, workers: int, deadline: float, say) -> int:
    "Compile (config, token counts) jobs in `workers` spawned processes until `deadline`; returns how many finished."
    import multiprocessing as mp
    if workers <= 0 or not jobs:
        return 0
    chunks = [jobs[i::workers * 3] for i in range(workers * 3)]
    chunks = [[(asdict(c), Ts) for c, Ts in ch] for ch in chunks if ch]
    finished = 0
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(workers)
    try:
        it = pool.imap_unordered(_compile_worker, [(ch, dims, dtype_name, device) for ch in chunks])
        for _ in range(len(chunks)):
            left = deadline - time.monotonic()
            if left <= 0:
                say(f"precompile: stopped at the deadline after {finished} of {len(jobs)} configs")
                break
            try:
                finished += len(it.next(timeout=left))
            except mp.TimeoutError:
                say(f"precompile: stopped at the deadline after {finished} of {len(jobs)} configs")
                break
    finally:
        pool.terminate()
        pool.join()
    return finished


# ---- the search ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=240.0, help="cap on the whole run (default 240)")
    ap.add_argument("--tokens", type=lambda s: tuple(int(t) for t in s.split(",")), default=None,
                    help="comma-separated token counts (default: the benchmark's, 1 ... 4096)")
    ap.add_argument("--out-dir", default=None, help=f"where the JSON table goes (default {DEFAULT_OUT})")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes that precompile candidates (default: CPU count - 2, at most 14; 0: none)")
    ap.add_argument("--max-candidates", type=int, default=None, help="time at most this many candidates per T")
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="tiny shapes on CPU under the Triton interpreter; writes to a temporary folder")
    args = ap.parse_args(argv)

    import torch
    if not args.dry_run_cpu:
        if not torch.cuda.is_available():
            print(NO_GPU.format(why=f"no CUDA device is available here (torch {torch.__version__})"), file=sys.stderr)
            return 2
        from cascade_lab.kernels.moe import triton_unavailable_reason
        why = triton_unavailable_reason("cuda")
        if why is not None:
            print(NO_GPU.format(why=f"the kernels cannot run on it now: {why}"), file=sys.stderr)
            return 2

    import bench_moe as bm
    from cascade_lab.kernels.moe import device_name, fused_moe, get_moe_config, moe_reference, save_tuned_configs

    start = time.monotonic()
    deadline = start + args.budget_s
    say = bm.say
    if args.dry_run_cpu:
        from cascade_lab.kernels.moe import triton_unavailable_reason
        if triton_unavailable_reason("cpu") is not None:
            say(f"--dry-run-cpu needs the Triton interpreter: {triton_unavailable_reason('cpu')}")
            return 2
        device, dtype = torch.device("cpu"), torch.float32
        shape = bm.Shape(E=8, H=64, I=48, k=2)
        tokens = args.tokens or (1, 8, 32)
        max_cand = args.max_candidates or 3
        workers = 1 if args.workers is None else args.workers    # exercises the pool code path
        out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="tune_moe_dry_"))
        timer = bm.Timer(device, cpu_reps=1)
        say("DRY RUN on CPU under the Triton interpreter: tiny shapes, timings mean nothing; "
            f"the table goes to {out_dir}, never into the package")
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
        shape = bm.shape_of(bm.model_config_dict()[0])
        tokens = args.tokens or bm.BENCH_TOKENS
        max_cand = args.max_candidates
        workers = min(14, max(0, (os.cpu_count() or 2) - 2)) if args.workers is None else args.workers
        out_dir = Path(args.out_dir) if args.out_dir else DEFAULT_OUT
        timer = bm.Timer(device, warmup_ms=5, rep_ms=20)
    dev_name = device_name(device)
    esize = torch.empty(0, dtype=dtype).element_size()
    tol = bm.REL_TOL[dtype]
    say(f"tuning for {bm.device_label(device)} ('{dev_name}'): E={shape.E} H={shape.H} I={shape.I} top-{shape.k} "
        f"{str(dtype).replace('torch.', '')}, T in {list(tokens)}, budget {args.budget_s:.0f} s")

    # Candidates come from the DEFAULT table (never from a tuned file being replaced).
    from cascade_lab.kernels.moe import DEFAULT_CONFIGS

    def default_for(T):
        return next(c for limit, c in DEFAULT_CONFIGS if limit is None or T <= limit)
    pools = {T: candidates_for(T, shape.E, shape.k, default_for(T), esize)[:max_cand] for T in tokens}
    say("candidates per T: " + ", ".join(f"{T}:{len(p)}" for T, p in pools.items()))

    # 1. compile every distinct candidate in parallel (priority order, so a deadline cuts the least likely)
    if workers:
        jobs, seen = [], {}
        for rank in range(max(len(p) for p in pools.values())):
            for T, p in pools.items():
                if rank < len(p):
                    c = p[rank]
                    need = {1} if c.decode else ({1} if T < 8 else {32})
                    seen.setdefault(c, set()).update(need)
        jobs = [(c, sorted(Ts)) for c, Ts in seen.items()]
        t0 = time.monotonic()
        n = precompile(jobs, (shape.H, shape.I, shape.k), str(dtype).replace("torch.", ""), device.type, workers,
                       start + 0.45 * args.budget_s, say)
        say(f"precompile: {n} of {len(jobs)} configs compiled by {workers} processes in {time.monotonic() - t0:.0f} s")

    # 2. time the candidates, T by T, each T getting an equal share of what is left
    up_g = torch.Generator(device=device).manual_seed(0)
    up = torch.randn(shape.E, shape.I, shape.H, generator=up_g, device=device, dtype=dtype).mul_(shape.H ** -0.5)
    down = torch.randn(shape.E, shape.H, shape.I, generator=up_g, device=device, dtype=dtype).mul_(shape.I ** -0.5)
    chosen, report, failures = {}, [], 0
    for i, T in enumerate(tokens):
        share = (deadline - time.monotonic()) / (len(tokens) - i)
        t_end = time.monotonic() + share
        x, ids, w = bm.make_tokens(T, shape, dtype, device, seed=T)
        ref = moe_reference(x.float(), up, down, ids, w)
        timings, errors = [], []
        for n_done, cfg in enumerate(pools[T]):
            if n_done and time.monotonic() > t_end:
                break
            def fn(cfg=cfg):
                return fused_moe(x, up, down, ids, w, config=cfg)
            try:
                fn()
                bm.sync(device)
                timings.append((timer(fn), cfg))
            except Exception as e:
                errors.append(f"{bm.config_label(cfg)}: {bm.first_line(e)}")
        timings.sort(key=lambda t: t[0])
        default_us = next((us for us, c in timings if c == default_for(T)), None)
        best = None
        for us, cfg in timings:                       # fastest candidate that is also right
            err = bm.rel_err(fused_moe(x, up, down, ids, w, config=cfg), ref)
            if err <= tol:
                best = (us, cfg, err)
                break
            errors.append(f"{bm.config_label(cfg)}: WRONG, rel err {err:.1e}")
        if best is None:
            failures += 1
            chosen[T] = default_for(T)
            line = (f"T={T:<5d} no candidate both ran and matched moe_reference; keeping the default "
                    f"[{bm.config_label(chosen[T])}]")
        else:
            us, cfg, err = best
            chosen[T] = cfg
            vs = f"default {default_us:.1f} us, {default_us / us:.2f}x" if default_us else "default not timed"
            line = (f"T={T:<5d} best [{bm.config_label(cfg)}] {us:.1f} us ({vs}); timed {len(timings)}/{len(pools[T])} "
                    f"candidates; rel err {err:.1e} OK")
        say(line)
        report.append(line)
        for e in errors[:5]:
            say(f"    skipped {e}")
        if len(errors) > 5:
            say(f"    ... and {len(errors) - 5} more skipped")
    path = save_tuned_configs(chosen, shape.E, shape.I, dev_name, out_dir)
    say(f"wrote {path} ({len(chosen)} token counts) in {time.monotonic() - start:.0f} s")
    if not args.dry_run_cpu:
        check = get_moe_config(shape.E, shape.I, tokens[0], dev_name, config_dir=str(out_dir))
        say(f"get_moe_config now returns for T={tokens[0]}: [{bm.config_label(check)}] (from {out_dir})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
