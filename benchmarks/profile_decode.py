"""Where a whole-model decode step goes, per experts backend: NemotronHForCausalLM with the real config and random
weights on a GPU, greedy decoding at batch 1; torch.profiler over a few steps, the top operators by CUDA and by
CPU time, and the cost of recording every token's routing (`RoutingRecorder`).

    python benchmarks/profile_decode.py [--steps 8] [--batch 1] [--backends cascade_triton,grouped_mm]

Needs a CUDA GPU with about 70 GB free (the bf16 weights)."""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_moe  # noqa: E402  (the real config and the model build of the decode benchmark)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--backends", default="cascade_triton,grouped_mm")
    a = ap.parse_args()
    if not torch.cuda.is_available(): sys.exit("profile_decode.py needs a CUDA GPU")
    from torch.profiler import ProfilerActivity, profile
    from transformers import NemotronHConfig, NemotronHForCausalLM
    cfg_dict, source = bench_moe.model_config_dict()
    cfg = NemotronHConfig.from_dict({k: v for k, v in cfg_dict.items() if k not in ("torch_dtype", "transformers_version", "dtype")})
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = NemotronHForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()
    prompt = torch.randint(3, cfg.vocab_size, (a.batch, 16), generator=torch.Generator().manual_seed(0)).cuda()

    def gen(n):
        with torch.inference_mode():
            return model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, min_new_tokens=n,
                                  max_new_tokens=n, pad_token_id=cfg.pad_token_id)

    def timed(n):
        torch.cuda.synchronize(); t = time.perf_counter(); gen(n); torch.cuda.synchronize()
        return time.perf_counter() - t

    for name in a.backends.split(","):
        model.set_experts_implementation(name)
        gen(2)
        t1, tn = timed(1), timed(1 + a.steps)
        print(f"\n== {name}: {(tn - t1) / a.steps * 1e3:.1f} ms per decode step (batch {a.batch})", flush=True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            gen(1 + a.steps)
        ka = prof.key_averages()
        print(ka.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))
        print(ka.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
        try:
            from cascade_lab.routing import RoutingRecorder
            with RoutingRecorder(model, capacity=16 + a.steps + 8):
                tr = timed(1 + a.steps)
            print(f"routing recorder: {tr / tn - 1:+.1%} of the decode time ({tn:.3f} s -> {tr:.3f} s)")
        except Exception as e:
            print(f"routing recorder: FAILED {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
