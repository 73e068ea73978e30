"""Generation benchmarks on the demo model (CPU or GPU): the cost of recording routing, and `generate`
against transformers' own `model.generate` on the same prompt and settings.

    python benchmarks/bench_generate.py [--tokens 128] [--reps 5]

Prints tokens/s (median of interleaved repetitions) and the ratios the goals are stated in:
recording overhead at most 5 %, `generate` at least 0.95x `model.generate`."""
import argparse
import statistics
import time

import torch

from cascade_lab.chat import PYTHON_TOOL, render_chat
from cascade_lab.demo import TIR_INSTRUCTION, make_problems
from cascade_lab.generate import generate_ids
from cascade_lab.model import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per run (forced: no early stop)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    model, tok = load_model()
    q = make_problems(1, seed=3000)[0]["question"]
    prompt = render_chat([{"role": "user", "content": TIR_INSTRUCTION + q}], [PYTHON_TOOL], add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
    n = args.tokens

    def hf():
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                                 min_new_tokens=n, pad_token_id=0)
        return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - t)

    def ours(record):
        # the stop tokens are suppressed so every run makes exactly n tokens, as model.generate above
        model.generation_config.min_new_tokens = n
        try:
            g = generate_ids(model, tok, [prompt], greedy=True, max_new_tokens=n, record_routing=record)[0]
        finally:
            model.generation_config.min_new_tokens = None
        return g.timings["tokens_per_s"]

    runs = {"model.generate": hf, "generate (no routing)": lambda: ours(False), "generate (routing)": lambda: ours(True)}
    for f in runs.values(): f()                                     # warm-up
    results = {k: [] for k in runs}
    for _ in range(args.reps):                                      # interleaved: drifts hit every variant alike
        for k, f in runs.items(): results[k].append(f())
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"demo model on {model.device}, prompt {ids.shape[1]} tokens, {n} new tokens, median of {args.reps}:")
    for k, v in med.items(): print(f"  {k:24s} {v:8.1f} tokens/s")
    overhead = 1 - med["generate (routing)"] / med["generate (no routing)"]
    ratio = med["generate (routing)"] / med["model.generate"]
    print(f"routing recording overhead: {overhead:+.1%} (goal <= 5 %: {'PASS' if overhead <= 0.05 else 'FAIL'})")
    print(f"generate (with routing) / model.generate: {ratio:.3f}x (goal >= 0.95x: {'PASS' if ratio >= 0.95 else 'FAIL'})")


if __name__ == "__main__":
    main()
