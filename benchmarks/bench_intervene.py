"""The cost of an active routing intervention on generation, on the demo model (CPU or GPU).

    python benchmarks/bench_intervene.py [--tokens 128] [--reps 5]

`generate` (routing recorded, the run's trace built) without interventions, and with: one reroute ablation in one
MoE layer; the same scoped to the reasoning tokens (decided as they are generated); a bias on every MoE layer; a
replay of a recorded run on every MoE layer. Each variant makes exactly `--tokens` new tokens
(stop tokens suppressed); tokens/s is the median of interleaved repetitions. The goal: an active intervention
costs at most 10 % of generation speed."""
import argparse
import statistics

import torch

from cascade_lab.chat import PYTHON_TOOL, render_chat
from cascade_lab.demo import TIR_INSTRUCTION, make_problems
from cascade_lab.generate import generate
from cascade_lab.intervene import ablate, bias, intervene, replay
from cascade_lab.model import load_model
from cascade_lab.routing import moe_routers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per run (forced: no early stop)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    model, tok = load_model()
    q = make_problems(1, seed=3000)[0]["question"]
    chat = [{"role": "user", "content": TIR_INSTRUCTION + q}]
    prompt = render_chat(chat, [PYTHON_TOOL], add_generation_prompt=True)
    n = args.tokens
    layers = [l for l, _ in moe_routers(model)]
    E = int(model.config.n_routed_experts)
    recorded = generate(model, tok, chat, tools=[PYTHON_TOOL], greedy=True, max_new_tokens=n)

    def run(interventions):
        model.generation_config.min_new_tokens = n
        try:
            if not interventions:
                return generate(model, tok, chat, tools=[PYTHON_TOOL], greedy=True, max_new_tokens=n).timings["tokens_per_s"]
            with intervene(model, interventions):
                return generate(model, tok, chat, tools=[PYTHON_TOOL], greedy=True, max_new_tokens=n).timings["tokens_per_s"]
        finally:
            model.generation_config.min_new_tokens = None

    variants = {"no intervention": [], "ablate 1 expert, 1 layer": [ablate(layers[0], 3)],
                "same, reasoning tokens only": [ablate(layers[0], 3, segment="reasoning")],
                f"bias, all {len(layers)} layers": [bias(l, torch.linspace(-0.01, 0.01, E)) for l in layers],
                f"replay, all {len(layers)} layers": replay(recorded)}
    for v in variants.values(): run(v)                               # warm-up
    results = {k: [] for k in variants}
    for _ in range(args.reps):                                       # interleaved: drifts hit every variant alike
        for k, v in variants.items(): results[k].append(run(v))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"demo model on {model.device}, prompt {len(tok(prompt).input_ids)} tokens, {n} new tokens, median of {args.reps}:")
    base = med["no intervention"]
    for k, v in med.items():
        cost = 1 - v / base
        verdict = "" if k == "no intervention" else f"  overhead {cost:+.1%} (goal <= 10 %: {'PASS' if cost <= 0.10 else 'FAIL'})"
        print(f"  {k:28s} {v:8.1f} tokens/s{verdict}")


if __name__ == "__main__":
    main()
