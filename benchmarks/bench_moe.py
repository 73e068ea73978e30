#!/usr/bin/env python
"""Benchmark of the ROUTED EXPERTS of one MoE layer of Nemotron-Cascade-2-30B-A3B.

What is timed is the routed-experts computation only: for every token, 6 of 128 experts
(up-projection, relu2, down-projection, routing-weighted sum). The router, the shared expert and the
rest of the layer are not part of it (the whole-model decode figure at the end includes everything).

Modes
  GPU (default when CUDA is available)
      Real shapes (E=128 experts, H=2688, I=1856, top-6, bf16) at T = 1 ... 4096 tokens: microseconds
      per layer for our Triton kernels (`cascade_triton`, tuned or default launch config), for
      transformers' experts backends `eager`, `batched_mm` and `grouped_mm` (run through a real
      `NemotronHExperts` module), and for vLLM's fused MoE when `vllm` is importable. Checks ours
      against `moe_reference` at every T, reports the fraction of the HBM roofline, prints PASS/FAIL
      against the goals, then (unless --no-decode) builds the whole model on the GPU with random
      weights and measures greedy decoding tokens/s at batch 1 and 32, `cascade_triton` vs `grouped_mm`.
      --results PATH writes the tables as markdown (benchmarks/gpu_check.sh uses it for RESULTS.md).
  CPU short mode (--cpu, or automatic without CUDA)
      Tiny shapes in fp32: the torch backends must agree with each other and with `moe_reference`
      (and our Triton kernels too, at one tiny shape, when TRITON_INTERPRET=1 is set). Exits non-zero
      on any disagreement. CPU timings say NOTHING about GPU performance.
  --dry-run-cpu
      Runs the GPU-mode code (tables, goals, results file, decode figure) at tiny shapes on CPU tensors
      under the Triton interpreter, so that the GPU code paths have run once before a real GPU run.
      Its timings and verdicts are not performance evidence either.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.util
import inspect
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if "--dry-run-cpu" in sys.argv[1:]:
    os.environ.setdefault("TRITON_INTERPRET", "1")   # the interpreter must be on before triton is imported

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import cascade_lab  # noqa: E402,F401  (importing it registers the `cascade_triton` experts backend)
from cascade_lab.kernels.moe import (MoEConfig, device_name, fused_moe, get_moe_config,  # noqa: E402
                                     load_tuned_configs, moe_reference, triton_unavailable_reason)

# ---- facts (nbs/07_model.ipynb) ----------------------------------------------------------------------
BENCH_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
HBM_BYTES_PER_S = 4.8e12            # H200 HBM3e, datasheet
OURS = "cascade_triton"
TF_BACKENDS = ("eager", "batched_mm", "grouped_mm")
VLLM = "vllm"
REL_TOL = {torch.bfloat16: 2e-2, torch.float16: 1e-2, torch.float32: 1e-4}
GOAL_SPEEDUP = 1.5                  # over the fastest transformers backend, at every T
GOAL_ROOFLINE = 0.70                # fraction of the HBM roofline ...
GOAL_ROOFLINE_MAX_T = 8             # ... at T <= 8

# The checkpoint's config: the published config.json of Nemotron-3-Nano-30B-A3B, which Cascade-2 keeps (its
# architecture is written out in nbs/07_model.ipynb). Used when no config file is at hand (model_config_dict).
MODEL_CONFIG_FALLBACK = {
    "architectures": ["NemotronHForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 1, "chunk_size": 128, "conv_kernel": 4, "eos_token_id": 2, "expand": 2, "head_dim": 128,
    "hidden_dropout": 0.0, "hidden_size": 2688,
    "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    "initializer_range": 0.02, "intermediate_size": 1856, "layer_norm_epsilon": 1e-05, "mamba_head_dim": 64,
    "mamba_hidden_act": "silu", "mamba_num_heads": 64, "mamba_proj_bias": False,
    "mamba_ssm_cache_dtype": "float32", "max_position_embeddings": 262144, "mlp_bias": False,
    "mlp_hidden_act": "relu2", "model_type": "nemotron_h", "moe_intermediate_size": 1856,
    "moe_shared_expert_intermediate_size": 3712, "n_group": 1, "n_groups": 8, "n_routed_experts": 128,
    "n_shared_experts": 1, "norm_eps": 1e-05, "norm_topk_prob": True, "num_attention_heads": 32,
    "num_experts_per_tok": 6, "num_hidden_layers": 52, "num_key_value_heads": 2, "num_logits_to_keep": 1,
    "pad_token_id": 0, "partial_rotary_factor": 1.0, "rescale_prenorm_residual": True,
    "residual_in_fp32": False, "rope_theta": 10000, "routed_scaling_factor": 2.5, "sliding_window": None,
    "ssm_state_size": 128, "tie_word_embeddings": False, "time_step_floor": 0.0001, "time_step_max": 0.1,
    "time_step_min": 0.001, "topk_group": 1, "use_bias": False, "use_cache": True, "use_conv_bias": True,
    "use_mamba_kernels": True, "vocab_size": 131072,
}

# A tiny NemotronH (the layout of tests/test_kernels_moe.py) for --dry-run-cpu's decode figure.
TINY_MODEL_CONFIG = dict(
    vocab_size=97, hidden_size=48, num_hidden_layers=6, hybrid_override_pattern="ME*EME", n_routed_experts=12,
    num_experts_per_tok=3, moe_intermediate_size=24, moe_shared_expert_intermediate_size=48, intermediate_size=48,
    num_attention_heads=4, num_key_value_heads=2, head_dim=12, mamba_num_heads=4, mamba_head_dim=12,
    ssm_state_size=8, n_groups=2, chunk_size=16, conv_kernel=4, expand=1, n_group=1, topk_group=1,
    mlp_hidden_act="relu2", pad_token_id=0, bos_token_id=1, eos_token_id=2)


@dataclass(frozen=True)
class Shape:
    "The routed experts of one MoE layer: E experts, hidden H, expert intermediate I, top-k."
    E: int
    H: int
    I: int
    k: int

    def expert_bytes(self, esize: int) -> int:
        "bytes of one expert's weights (up [I, H] and down [H, I])"
        return 2 * self.I * self.H * esize


def say(*a, **kw):
    print(*a, **kw, flush=True)


def model_config_dict() -> tuple[dict, str]:
    """The real checkpoint config: $CASCADE_MODEL_CONFIG (a config.json) when set, else the official config.json
    when tests/reference_oracle.py finds one (a reference folder or the local Hugging Face cache, offline), else
    the values written out above."""
    env = os.environ.get("CASCADE_MODEL_CONFIG")
    if env and Path(env).is_file():
        return json.loads(Path(env).read_text()), env
    tests = str(REPO / "tests")
    try:
        sys.path.insert(0, tests)
        from reference_oracle import find_reference
        ref = find_reference("config")
        if ref: return ref.json(), ref.where
    except Exception:  # the oracle is optional: it never stops the benchmark
        pass
    finally:
        if tests in sys.path: sys.path.remove(tests)
    return dict(MODEL_CONFIG_FALLBACK), ("values hard-coded in bench_moe.py (no config.json at hand: "
                                         "$CASCADE_MODEL_CONFIG unset, none found by tests/reference_oracle.py)")


def shape_of(cfg: dict) -> Shape:
    return Shape(E=cfg["n_routed_experts"], H=cfg["hidden_size"], I=cfg["moe_intermediate_size"],
                 k=cfg["num_experts_per_tok"])


def versions() -> dict:
    import transformers
    import triton
    return {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "transformers": transformers.__version__}


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    "max |got - ref| / max |ref|"
    got, ref = got.float(), ref.float()
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


# ---- inputs -------------------------------------------------------------------------------------------
def make_experts(shape: Shape, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """A real transformers `NemotronHExperts` module (so its backends run exactly as in the model) with random
    weights of `dtype` on `device`, built on the meta device first so that no full-size CPU copy is made."""
    from transformers import NemotronHConfig
    from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHExperts
    cfg = NemotronHConfig(n_routed_experts=shape.E, hidden_size=shape.H, moe_intermediate_size=shape.I,
                          num_experts_per_tok=shape.k, mlp_hidden_act="relu2")
    with torch.device("meta"):
        module = NemotronHExperts(cfg)
    g = torch.Generator(device=device).manual_seed(seed)
    up = torch.randn(shape.E, shape.I, shape.H, generator=g, device=device, dtype=dtype).mul_(shape.H ** -0.5)
    down = torch.randn(shape.E, shape.H, shape.I, generator=g, device=device, dtype=dtype).mul_(shape.I ** -0.5)
    module.up_proj = torch.nn.Parameter(up, requires_grad=False)
    module.down_proj = torch.nn.Parameter(down, requires_grad=False)
    return module.eval()


def make_tokens(T: int, shape: Shape, dtype: torch.dtype, device: torch.device, seed: int):
    """Hidden states [T, H] and realistic routing: top-k ids distinct per token, uniform over the experts, and
    fp32 weights normalised per token and scaled by 2.5 (the router's routed_scaling_factor)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(T, shape.E, generator=g).argsort(dim=1)[:, : shape.k].contiguous()
    w = torch.rand(T, shape.k, generator=g) + 0.05
    w = w / w.sum(dim=1, keepdim=True) * 2.5
    hidden = torch.randn(T, shape.H, generator=g).to(dtype)
    return hidden.to(device), ids.to(device), w.to(device)


def roofline_us(touched: int, T: int, shape: Shape, esize: int) -> float:
    "HBM-bound time: every touched expert's weights read once, plus the hidden states in and the output out."
    return (touched * shape.expert_bytes(esize) + 2 * T * shape.H * esize) / HBM_BYTES_PER_S * 1e6


def expected_touched(T: int, shape: Shape) -> float:
    return shape.E * (1 - (1 - shape.k / shape.E) ** T)


# ---- backends -----------------------------------------------------------------------------------------
def module_backend(module, name: str):
    "A backend run as transformers runs it: the experts module's forward with `config._experts_implementation`."
    def run(x, ids, w):
        module.config._experts_implementation = name
        return module(x, ids, w)
    return run


def find_vllm():
    """(callable(x, up, down, ids, w) -> out, None) for vLLM's fused MoE with non-gated relu2 experts, or
    (None, why not). vLLM's Python API moves between releases, so the call is built from the signature found."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return None, f"vllm is not importable ({first_line(e)})"
    fused_experts, errors = None, []
    for mod in ("vllm.model_executor.layers.fused_moe", "vllm.model_executor.layers.fused_moe.fused_moe"):
        try:
            fused_experts = importlib.import_module(mod).fused_experts
            break
        except Exception as e:
            errors.append(f"{mod}.fused_experts: {first_line(e)}")
    if fused_experts is None:
        return None, "no vllm fused_experts found (" + "; ".join(errors) + ")"
    try:
        params = inspect.signature(fused_experts).parameters
    except (TypeError, ValueError):
        params = {}
    if params and "activation" not in params:
        return None, "this vllm's fused_experts takes no `activation`: it cannot run non-gated relu2 experts"
    acts = []
    try:
        from vllm.model_executor.layers.fused_moe.activation import MoEActivation
        acts.append(MoEActivation.RELU2_NO_MUL)
    except Exception:
        pass
    acts += ["relu2_no_mul", "relu2"]
    variants = []
    for act in acts:
        kw = {"activation": act}
        if "is_act_and_mul" in params:
            kw["is_act_and_mul"] = False
        variants.append(kw)

    def make(kw):
        def run(x, up, down, ids, w):
            return fused_experts(x, up, down, w, ids.to(torch.int32), **kw)
        run.kwargs = kw
        return run
    return [make(kw) for kw in variants], None


def vllm_config_context():
    "vLLM code may read a current VllmConfig; provide a default one when the API has it."
    try:
        from vllm.config import VllmConfig, set_current_vllm_config
        return set_current_vllm_config(VllmConfig())
    except Exception:
        return contextlib.nullcontext()


# ---- timing -------------------------------------------------------------------------------------------
class Timer:
    "Median microseconds of `fn()`: triton.testing.do_bench on CUDA (L2 flushed before each rep), perf_counter on CPU."

    def __init__(self, device: torch.device, warmup_ms: int = 25, rep_ms: int = 100, cpu_reps: int = 5):
        self.device, self.warmup_ms, self.rep_ms, self.cpu_reps = device, warmup_ms, rep_ms, cpu_reps

    def __call__(self, fn) -> float:
        if self.device.type == "cuda":
            from triton.testing import do_bench
            try:
                ms = do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, return_mode="median")
            except TypeError:     # a triton without return_mode
                ms = do_bench(fn, warmup=self.warmup_ms, rep=self.rep_ms, quantiles=[0.5])
            if isinstance(ms, (list, tuple)):
                ms = ms[0]
            return float(ms) * 1e3
        times = []
        for _ in range(self.cpu_reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    def once(self, fn) -> float:
        "microseconds of one synchronised call"
        sync(self.device)
        t0 = time.perf_counter()
        fn()
        sync(self.device)
        return (time.perf_counter() - t0) * 1e6


def graph_us(fn, timer: Timer) -> float:
    "Time `fn` replayed from a CUDA graph: kernel time without Python and launch overhead."
    dev = timer.device
    stream = torch.cuda.Stream(dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(dev).wait_stream(stream)
    sync(dev)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    sync(dev)
    try:
        return timer(graph.replay)
    finally:
        del graph


# ---- the kernel table ---------------------------------------------------------------------------------
@dataclass
class Row:
    T: int
    touched: int
    roofline_us: float
    config: str = ""
    us: dict = field(default_factory=dict)          # backend -> microseconds (None: did not run)
    approx: set = field(default_factory=set)        # backends timed by one call only (over the cap)
    err: dict = field(default_factory=dict)         # backend -> rel err against moe_reference
    graph_us: float | None = None
    notes: list = field(default_factory=list)

    def best_tf(self) -> tuple[str | None, float | None]:
        ran = [(self.us[b], b) for b in TF_BACKENDS if self.us.get(b) is not None]
        if not ran:
            return None, None
        us, b = min(ran)
        return b, us


def config_label(cfg: MoEConfig) -> str:
    if cfg.decode:
        return f"gemv N{cfg.BLOCK_N} K{cfg.BLOCK_K} w{cfg.num_warps} s{cfg.num_stages}"
    return f"gemm M{cfg.BLOCK_M} N{cfg.BLOCK_N} K{cfg.BLOCK_K} G{cfg.GROUP_M} w{cfg.num_warps} s{cfg.num_stages}"


def kernel_table(shape: Shape, tokens, dtype, device, timer: Timer, cap_ms: float, use_graph: bool,
                 seed: int = 0) -> tuple[list[Row], list[str]]:
    "Time every backend at every T; returns the rows and the notes about skipped backends."
    tol = REL_TOL[dtype]
    esize = torch.empty(0, dtype=dtype).element_size()
    module = make_experts(shape, dtype, device, seed)
    up, down = module.up_proj, module.down_proj
    fns = {OURS: module_backend(module, OURS)}
    fns.update({b: module_backend(module, b) for b in TF_BACKENDS})
    notes: list[str] = []

    vllm_variants, why = find_vllm()
    vllm_ctx = contextlib.ExitStack()
    if vllm_variants is None:
        notes.append(f"vllm: skipped: {why}")
    else:
        try:
            vllm_ctx.enter_context(vllm_config_context())
        except Exception as e:
            notes.append(f"vllm: ran without a current VllmConfig ({first_line(e)})")
    capped: dict[str, str] = {}
    dev_name = device_name(device)
    tuned = load_tuned_configs(shape.E, shape.I, dev_name)
    say(f"launch configs for ours: {'tuned table for ' + dev_name if tuned else 'default table (no tuned file for ' + dev_name + ')'}")

    rows = []
    for T in tokens:
        x, ids, w = make_tokens(T, shape, dtype, device, seed=seed + T)
        touched = int(ids.unique().numel())
        row = Row(T=T, touched=touched, roofline_us=roofline_us(touched, T, shape, esize),
                  config=config_label(get_moe_config(shape.E, shape.I, T, dev_name)))
        ref = moe_reference(x.float(), up, down, ids, w)          # fp32 throughout

        def attempt(name, call):
            if name in capped:
                row.us[name] = None
                return None
            try:
                if name == "batched_mm":   # gathers one [I, H] weight matrix per (token, expert) pair
                    need = T * shape.k * shape.I * shape.H * esize
                    limit = 0.5 * torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 4 * 2**30
                    if need > limit:
                        capped[name] = f"skipped from T={T}: would gather {need / 2**30:.1f} GiB of expert weights"
                        row.us[name] = None
                        return None
                out = call()                                    # warm-up (and Triton's compile)
                sync(device)
                one = timer.once(call)
                if one > cap_ms * 1e3 and name != OURS:      # ours is the subject: always timed fully
                    row.us[name] = one
                    row.approx.add(name)
                    capped[name] = f"skipped from the T after {T}: one call took {one / 1e3:.0f} ms (> --cap-ms {cap_ms:g})"
                else:
                    row.us[name] = timer(call)
                row.err[name] = rel_err(out, ref)
                return out
            except Exception as e:   # an OOM, an unsupported op, a compile failure: note it, go on
                row.us[name] = None
                row.notes.append(f"{name}: {first_line(e)}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                return None

        attempt(OURS, lambda: fns[OURS](x, ids, w))
        for b in TF_BACKENDS:
            attempt(b, lambda b=b: fns[b](x, ids, w))
        if vllm_variants is not None:
            if isinstance(vllm_variants, list):          # pick the first call form that runs and is right
                reasons = []
                for v in vllm_variants:
                    try:
                        e = rel_err(v(x, up, down, ids, w), ref)
                        if e <= tol:
                            vllm_variants = v
                            say(f"vllm: fused_experts with {v.kwargs} (rel err {e:.1e})")
                            break
                        reasons.append(f"{v.kwargs}: rel err {e:.1e}")
                    except Exception as ex:
                        reasons.append(f"{v.kwargs}: {first_line(ex)}")
                else:
                    notes.append("vllm: skipped: no call form ran correctly: " + "; ".join(reasons))
                    vllm_variants = None
            if vllm_variants is not None:
                attempt(VLLM, lambda: vllm_variants(x, up, down, ids, w))

        if use_graph and device.type == "cuda" and row.us.get(OURS) is not None:
            try:
                row.graph_us = graph_us(lambda: fns[OURS](x, ids, w), timer)
            except Exception as e:
                use_graph = False
                notes.append(f"CUDA graph timing of ours disabled after T={T}: {first_line(e)}")
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize(device)

        rows.append(row)
        say(format_row_line(row, tol))
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for name, why in capped.items():
        notes.append(f"{name}: {why}")
    vllm_ctx.close()
    return rows, notes          # the weights (about 2.5 GB at the real shape) go with this frame


def fmt_us(v, approx=False) -> str:
    if v is None:
        return "-"
    return ("~" if approx else "") + (f"{v:,.0f}" if v >= 1000 else f"{v:.1f}")


def format_row_line(row: Row, tol: float) -> str:
    best, best_us = row.best_tf()
    ours = row.us.get(OURS)
    sp = f"{best_us / ours:.2f}x vs {best}" if ours and best_us else "n/a"
    frac = f"{row.roofline_us / ours:.0%}" if ours else "n/a"
    err = row.err.get(OURS)
    ok = "OK" if err is not None and err <= tol else "FAIL"
    errs = " ".join(f"{b}={fmt_us(row.us.get(b), b in row.approx)}" for b in TF_BACKENDS + (VLLM,) if b in row.us)
    g = f" graph={row.graph_us:.1f}us" if row.graph_us else ""
    s = (f"T={row.T:<5d} experts={row.touched:<3d} ours={fmt_us(ours)}us{g} [{row.config}] {errs} | speedup {sp} | "
         f"roofline {row.roofline_us:.1f}us ({frac}) | ours rel err "
         f"{'n/a' if err is None else f'{err:.1e}'} {ok}")
    if row.notes:
        s += "\n    notes: " + "; ".join(row.notes)
    return s


def table_markdown(rows: list[Row], tol: float, vllm_ran: bool) -> list[str]:
    cols = ["T", "experts touched", "ours us", "ours us (CUDA graph)", "eager us", "batched_mm us", "grouped_mm us"]
    if vllm_ran:
        cols.append("vLLM us")
    cols += ["fastest transformers / ours", "roofline us", "ours % roofline", "graph % roofline", "ours rel err"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        best, best_us = r.best_tf()
        ours = r.us.get(OURS)
        cells = [str(r.T), str(r.touched), fmt_us(ours), fmt_us(r.graph_us)]
        cells += [fmt_us(r.us.get(b), b in r.approx) for b in TF_BACKENDS]
        if vllm_ran:
            cells.append(fmt_us(r.us.get(VLLM), VLLM in r.approx))
        cells.append(f"{best_us / ours:.2f}x ({best})" if ours and best_us else "n/a")
        cells.append(f"{r.roofline_us:.1f}")
        cells.append(f"{r.roofline_us / ours:.0%}" if ours else "n/a")
        cells.append(f"{r.roofline_us / r.graph_us:.0%}" if r.graph_us else "n/a")
        err = r.err.get(OURS)
        cells.append("not run" if err is None else f"{err:.1e} {'OK' if err <= tol else 'FAIL'}")
        out.append("| " + " | ".join(cells) + " |")
    return out


def evaluate_goals(rows: list[Row], tol: float) -> list[tuple[str, str, str]]:
    "(goal, PASS|FAIL|N/A, detail) for each goal"
    goals = []
    bad = [r.T for r in rows if not (r.err.get(OURS) is not None and r.err[OURS] <= tol)]   # NaN counts as bad
    goals.append((f"ours matches moe_reference at every T (rel err <= {tol:g})", "FAIL" if bad else "PASS",
                  f"failed or not run at T={bad}" if bad else f"max rel err {max(r.err[OURS] for r in rows):.1e}"))

    sp = [(r.T, r.best_tf()[1] / r.us[OURS]) for r in rows if r.us.get(OURS) and r.best_tf()[1]]
    missing = [r.T for r in rows if not (r.us.get(OURS) and r.best_tf()[1])]
    if not sp:
        goals.append((f">= {GOAL_SPEEDUP}x the fastest transformers backend at every T", "N/A", "nothing to compare"))
    else:
        worst = min(sp, key=lambda t: t[1])
        ok = worst[1] >= GOAL_SPEEDUP and not missing
        goals.append((f">= {GOAL_SPEEDUP}x the fastest transformers backend at every T", "PASS" if ok else "FAIL",
                      f"lowest {worst[1]:.2f}x at T={worst[0]}" + (f"; not measured at T={missing}" if missing else "")))

    small = [r for r in rows if r.T <= GOAL_ROOFLINE_MAX_T and r.us.get(OURS)]
    if not small:
        goals.append((f">= {GOAL_ROOFLINE:.0%} of the HBM roofline at T <= {GOAL_ROOFLINE_MAX_T}", "N/A", "no row"))
    else:
        worst = min(small, key=lambda r: r.roofline_us / r.us[OURS])
        f = worst.roofline_us / worst.us[OURS]
        detail = f"lowest {f:.0%} at T={worst.T} (as called from transformers, launch overhead included)"
        graphs = [r for r in small if r.graph_us]
        if graphs:
            wg = min(graphs, key=lambda r: r.roofline_us / r.graph_us)
            detail += f"; from a CUDA graph: lowest {wg.roofline_us / wg.graph_us:.0%} at T={wg.T}"
        goals.append((f">= {GOAL_ROOFLINE:.0%} of the HBM roofline at T <= {GOAL_ROOFLINE_MAX_T}",
                      "PASS" if f >= GOAL_ROOFLINE else "FAIL", detail))

    vl = [(r.T, r.us[VLLM] / r.us[OURS]) for r in rows if r.us.get(VLLM) and r.us.get(OURS)]
    if not vl:
        goals.append(("at least as fast as vLLM's fused MoE", "N/A", "vllm not importable or did not run here"))
    else:
        worst = min(vl, key=lambda t: t[1])
        goals.append(("at least as fast as vLLM's fused MoE", "PASS" if worst[1] >= 1.0 else "FAIL",
                      f"lowest vLLM/ours {worst[1]:.2f}x at T={worst[0]}"))
    return goals


# ---- whole-model decoding -----------------------------------------------------------------------------
def decode_bench(cfg_dict: dict, dtype, device, batches, prompt_len: int, new_tokens: int,
                 backends=(OURS, "grouped_mm"), seed: int = 0) -> dict:
    """Greedy decoding tokens/s of NemotronHForCausalLM built on `device` with random weights (no checkpoint),
    for each experts backend and batch size. Returns {"rows": [...], "notes": [...], "info": {...}}."""
    from transformers import NemotronHConfig, NemotronHForCausalLM
    d = {k: v for k, v in cfg_dict.items() if k not in ("torch_dtype", "transformers_version", "dtype")}
    cfg = NemotronHConfig.from_dict(d)
    info = {"mamba_ssm": importlib.util.find_spec("mamba_ssm") is not None,
            "causal_conv1d": importlib.util.find_spec("causal_conv1d") is not None}
    notes = []
    with torch.device("meta"):             # free: sizes the weights before anything is allocated
        meta = NemotronHForCausalLM._from_config(cfg, dtype=dtype)
    need = sum(p.numel() * p.element_size() for p in meta.parameters())
    del meta
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        if free < need * 1.05 + 4e9:       # weights, plus caches and activations
            return {"rows": [], "notes": [f"skipped: {free / 1e9:.0f} GB free on the GPU, the weights alone are "
                                          f"{need / 1e9:.1f} GB"], "info": info}
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device(device):
        model = NemotronHForCausalLM._from_config(cfg, dtype=dtype)
    model.eval()
    sync(device)
    info["build_s"] = time.perf_counter() - t0
    info["params_b"] = sum(p.numel() for p in model.parameters()) / 1e9
    info["weights_gb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    say(f"decode: built NemotronHForCausalLM ({info['params_b']:.3g} B params, {info['weights_gb']:.3g} GB) on "
        f"{device} in {info['build_s']:.1f} s; mamba_ssm {'present' if info['mamba_ssm'] else 'absent (torch Mamba path)'}")

    rows = []
    g = torch.Generator().manual_seed(seed)
    for B in batches:
        prompt = torch.randint(3, cfg.vocab_size, (B, prompt_len), generator=g).to(device)
        mask = torch.ones_like(prompt)
        outs = {}
        for name in backends:
            try:
                model.set_experts_implementation(name)

                def gen(n):
                    with torch.inference_mode():
                        return model.generate(prompt, attention_mask=mask, do_sample=False, min_new_tokens=n,
                                              max_new_tokens=n, pad_token_id=cfg.pad_token_id)
                gen(2)                                  # warm-up: compiles and caches
                sync(device)
                t = time.perf_counter()
                gen(1)                                  # prefill + first token
                sync(device)
                t1 = time.perf_counter() - t
                t = time.perf_counter()
                out = gen(new_tokens)
                sync(device)
                tn = time.perf_counter() - t
                outs[name] = out[:, prompt_len:].cpu()
                steady = B * (new_tokens - 1) / max(tn - t1, 1e-9)
                rows.append({"batch": B, "backend": name, "tokens_per_s": steady, "end_to_end_tokens_per_s": B * new_tokens / tn,
                             "ms_per_step": (tn - t1) / max(new_tokens - 1, 1) * 1e3, "seconds": tn})
                say(f"decode: batch {B:<3d} {name:<15s} {steady:9.1f} tokens/s ({(tn - t1) / max(new_tokens - 1, 1) * 1e3:.1f} "
                    f"ms/step; {new_tokens} tokens in {tn:.2f} s incl. prefill)")
                if name == backends[0]:         # the same run with every token's routing recorded on the device
                    from cascade_lab.routing import RoutingRecorder
                    with RoutingRecorder(model, capacity=prompt_len + new_tokens + 8):
                        t = time.perf_counter()
                        gen(new_tokens)
                        sync(device)
                        tr = time.perf_counter() - t
                    rows.append({"batch": B, "backend": f"{name} + routing", "tokens_per_s": B * (new_tokens - 1) / max(tr - t1, 1e-9),
                                 "end_to_end_tokens_per_s": B * new_tokens / tr,
                                 "ms_per_step": (tr - t1) / max(new_tokens - 1, 1) * 1e3, "seconds": tr})
                    notes.append(f"batch {B}: recording the routing of every token costs {tr / tn - 1:+.1%} of the "
                                 f"decode time with {name} (goal: at most 5 %)")
                    say(f"decode: batch {B:<3d} {name} + routing recorder: {tr / tn - 1:+.1%} time")
            except Exception as e:
                notes.append(f"batch {B} {name}: {first_line(e)}")
                say(f"decode: batch {B} {name}: FAILED {first_line(e)}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if len(outs) == 2:
            a, b = outs.values()
            notes.append(f"batch {B}: greedy tokens identical between backends for {(a == b).float().mean().item():.0%} "
                         f"of positions (random weights; bf16 ties can flip argmax)")
    return {"rows": rows, "notes": notes, "info": info}     # the model goes with this frame


def decode_markdown(dec: dict) -> list[str]:
    out = ["| batch | backend | tokens/s (steady decode) | ms per step | tokens/s incl. prefill |", "|---|---|---|---|---|"]
    for r in dec["rows"]:
        out.append(f"| {r['batch']} | {r['backend']} | {r['tokens_per_s']:.1f} | {r['ms_per_step']:.2f} | "
                   f"{r['end_to_end_tokens_per_s']:.1f} |")
    for B in sorted({r["batch"] for r in dec["rows"]}):
        by = {r["backend"]: r["tokens_per_s"] for r in dec["rows"] if r["batch"] == B}
        if OURS in by and "grouped_mm" in by:
            out.append(f"\nbatch {B}: {OURS} / grouped_mm = **{by[OURS] / by['grouped_mm']:.2f}x** tokens/s")
    return out


# ---- modes --------------------------------------------------------------------------------------------
def write_results(path, lines: list[str]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(p)


def gpu_mode(args, device: torch.device, dry_run: bool) -> int:
    start = time.perf_counter()
    cfg_dict, cfg_source = model_config_dict()
    if dry_run:
        shape, tokens = Shape(E=16, H=64, I=48, k=4), args.tokens or (1, 2, 8, 64)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype or "fp32"]
        timer = Timer(device, cpu_reps=1)
    else:
        shape, tokens = shape_of(cfg_dict), args.tokens or BENCH_TOKENS
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype or "bf16"]
        timer = Timer(device, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms)
    tol = REL_TOL[dtype]
    esize = torch.empty(0, dtype=dtype).element_size()
    v = versions()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "DRY RUN on CPU under the Triton interpreter (tiny shapes; NOT performance evidence)" if dry_run else "GPU"
    header = [
        f"# MoE routed-experts benchmark ({title})", "",
        f"- device: {device_label(device)}",
        f"- versions: python {v['python']}, torch {v['torch']}, triton {v['triton']}, transformers {v['transformers']}",
        f"- date: {now}",
        f"- command: `{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`",
        f"- model config: {cfg_source}",
        f"- shape: E={shape.E} experts, H={shape.H}, I={shape.I}, top-{shape.k}, {str(dtype).replace('torch.', '')}; "
        f"one expert = {shape.expert_bytes(esize) / 1e6:.2f} MB",
        "- what is timed: the ROUTED EXPERTS of one MoE layer only (no router, no shared expert), median over "
        "reps with the L2 flushed before each (`triton.testing.do_bench`); ours is called through transformers' "
        "experts interface like the others. 'CUDA graph' replays ours without Python/launch overhead.",
        f"- roofline: (experts touched in the sampled routing x {shape.expert_bytes(esize) / 1e6:.2f} MB + hidden in "
        f"+ output out) / {HBM_BYTES_PER_S / 1e12:.1f} TB/s",
        "",
    ]
    say("\n".join(header))
    rows, notes = kernel_table(shape, tokens, dtype, device, timer, cap_ms=args.cap_ms,
                               use_graph=not args.no_graph, seed=args.seed)
    vllm_ran = any(r.us.get(VLLM) is not None for r in rows)
    table = table_markdown(rows, tol, vllm_ran)
    goals = evaluate_goals(rows, tol)
    goal_lines = [f"- GOAL {name}: **{status}** ({detail})" for name, status, detail in goals]
    body = header + ["## Routed experts, microseconds per MoE layer", ""] + table + [""]
    body += ["Notes:"] + [f"- {n}" for n in notes] + [""] if notes else []
    body += ["## Goals", ""] + goal_lines + [""]
    say("\n" + "\n".join(table))
    for n in notes:
        say(f"note: {n}")
    for name, status, detail in goals:
        say(f"GOAL {status:4s} {name}: {detail}")
    if args.results:
        write_results(args.results, body)        # now, so a later failure or timeout keeps the kernel table

    if args.decode:
        gc.collect()                      # the kernel table's weights, before the model is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elapsed = time.perf_counter() - start
        if args.budget_s and args.budget_s - elapsed < (20 if dry_run else 120):
            dec = {"rows": [], "notes": [f"skipped: {args.budget_s - elapsed:.0f} s left of --budget-s {args.budget_s}"],
                   "info": {}}
        else:
            try:
                if dry_run:
                    dec = decode_bench({**TINY_MODEL_CONFIG, "model_type": "nemotron_h"}, dtype, device,
                                       batches=(1, 2), prompt_len=4, new_tokens=3)
                else:
                    dec = decode_bench(cfg_dict, dtype, device, batches=args.decode_batches,
                                       prompt_len=args.prompt_len, new_tokens=args.new_tokens)
            except Exception as e:          # e.g. out of memory while building the model: keep the kernel table
                dec = {"rows": [], "notes": [f"failed: {first_line(e)}"], "info": {}}
                say(f"decode: FAILED {first_line(e)}")
        info = dec["info"]
        what = ("tiny NemotronH (dry run)" if dry_run else "the real config, random weights (no checkpoint)")
        body += ["## Whole-model greedy decoding", "",
                 f"NemotronHForCausalLM, {what}, {str(dtype).replace('torch.', '')}; prompt {args.prompt_len if not dry_run else 4} "
                 f"tokens; tokens/s = batch x (new tokens - 1) / (time of N tokens - time of 1 token). "
                 f"Mamba kernels: mamba_ssm {'present' if info.get('mamba_ssm') else 'absent'}, causal_conv1d "
                 f"{'present' if info.get('causal_conv1d') else 'absent'} (absent: transformers' PyTorch Mamba path, "
                 f"which dilutes the experts' share of a step). Build: "
                 f"{info.get('build_s', float('nan')):.1f} s, {info.get('params_b', float('nan')):.3g} B params.", ""]
        body += decode_markdown(dec) + [""]
        body += [f"- {n}" for n in dec["notes"]] + [""]
        for n in dec["notes"]:
            say(f"decode note: {n}")
        say("\n".join(decode_markdown(dec)))
        if args.results:
            write_results(args.results, body)
    if args.results:
        say(f"results written to {args.results}")
    return 0 if goals[0][1] == "PASS" else 1


def cpu_short_mode(args) -> int:
    say("CPU short mode: correctness of the PyTorch experts backends at tiny fp32 shapes.")
    say("NOTE: CPU timings say NOTHING about GPU performance; they only show the script runs.")
    v = versions()
    say(f"versions: python {v['python']}, torch {v['torch']}, triton {v['triton']}, transformers {v['transformers']}")
    device, dtype, tol = torch.device("cpu"), torch.float32, REL_TOL[torch.float32]
    shape = Shape(E=16, H=128, I=64, k=4)
    module = make_experts(shape, dtype, device, seed=args.seed)
    timer = Timer(device, cpu_reps=5)
    failures, checks = [], 0

    def check(label, got, ref, limit=tol):
        nonlocal checks
        checks += 1
        e = rel_err(got, ref)
        ok = e < limit
        say(f"AGREE {label:<52s} rel err {e:.1e} (limit {limit:.0e}) {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(label)

    for T in (1, 8, 64):
        x, ids, w = make_tokens(T, shape, dtype, device, seed=args.seed + T)
        ref = moe_reference(x, module.up_proj, module.down_proj, ids, w)
        outs, times = {}, {}
        for b in TF_BACKENDS:
            fn = module_backend(module, b)
            with torch.inference_mode():
                outs[b] = fn(x, ids, w)
                times[b] = timer(lambda fn=fn: fn(x, ids, w))
        times["moe_reference"] = timer(lambda: moe_reference(x, module.up_proj, module.down_proj, ids, w))
        say(f"T={T:<3d} E={shape.E} H={shape.H} I={shape.I} k={shape.k} (CPU us, not GPU evidence): "
            + "  ".join(f"{k}={v:.0f}" for k, v in times.items()))
        for b in TF_BACKENDS:
            check(f"T={T} {b} vs moe_reference", outs[b], ref)
        for b in TF_BACKENDS[1:]:
            check(f"T={T} {b} vs eager", outs[b], outs["eager"])

    why = triton_unavailable_reason("cpu")
    if why is None:
        tiny = Shape(E=8, H=32, I=24, k=2)
        m = make_experts(tiny, dtype, device, seed=args.seed + 1)
        x, ids, w = make_tokens(8, tiny, dtype, device, seed=args.seed + 2)
        ref = moe_reference(x, m.up_proj, m.down_proj, ids, w)
        for label, cfg in (("GEMV path", MoEConfig(decode=True, BLOCK_N=16, BLOCK_K=32)),
                           ("grouped-GEMM path", MoEConfig(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, GROUP_M=2))):
            t0 = time.perf_counter()
            got = fused_moe(x, m.up_proj, m.down_proj, ids, w, config=cfg)
            say(f"triton interpreter: fused_moe {label} T=8 E=8 H=32 I=24 k=2 in {time.perf_counter() - t0:.2f} s")
            check(f"T=8 fused_moe {label} (interpreter) vs moe_reference", got, ref)
        check("T=8 cascade_triton backend (interpreter) vs eager", module_backend(m, OURS)(x, ids, w),
              module_backend(m, "eager")(x, ids, w))
    else:
        say(f"our Triton kernels: not run ({why})")

    if failures:
        say(f"CPU short mode: FAILED {len(failures)} of {checks} agreement checks: {failures}")
        return 1
    say(f"CPU short mode: all {checks} agreement checks passed")
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="See the module docstring for the modes.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cpu", action="store_true", help="CPU short mode (automatic when CUDA is unavailable)")
    mode.add_argument("--dry-run-cpu", action="store_true",
                      help="run the GPU-mode code at tiny shapes on CPU under the Triton interpreter")
    p.add_argument("--results", metavar="PATH", help="also write the tables as markdown to PATH")
    p.add_argument("--tokens", type=lambda s: tuple(int(t) for t in s.split(",")), default=None,
                   help=f"comma-separated token counts (default {','.join(map(str, BENCH_TOKENS))})")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None, help="default bf16 (dry run: fp32)")
    p.add_argument("--cap-ms", type=float, default=1000.0,
                   help="a backend whose single call takes longer is timed once and skipped at larger T")
    p.add_argument("--warmup-ms", type=int, default=25)
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--no-graph", action="store_true", help="do not time ours replayed from a CUDA graph")
    p.add_argument("--decode", action=argparse.BooleanOptionalAction, default=True,
                   help="whole-model greedy decoding tokens/s (GPU mode; default on)")
    p.add_argument("--decode-batches", type=lambda s: tuple(int(t) for t in s.split(",")), default=(1, 32))
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip the decode figure when less than its estimated time is left of this budget")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run_cpu:
        why = triton_unavailable_reason("cpu")
        if why is not None:
            say(f"--dry-run-cpu needs the Triton interpreter: {why}")
            return 2
        return gpu_mode(args, torch.device("cpu"), dry_run=True)
    if args.cpu:
        return cpu_short_mode(args)
    if not torch.cuda.is_available():
        say("no CUDA device is available: running the CPU short mode (use --cpu to ask for it explicitly)")
        return cpu_short_mode(args)
    why = triton_unavailable_reason("cuda")
    if why is not None:
        say(f"cannot run the Triton kernels on the GPU: {why}")
        return 2
    return gpu_mode(args, torch.device("cuda"), dry_run=False)


if __name__ == "__main__":
    sys.exit(main())
