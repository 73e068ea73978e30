"""The Triton MoE kernels against the PyTorch reference on many odd shapes (under the interpreter on a CPU),
and whole tiny NemotronH models: `cascade_triton` logits equal `eager` logits."""
from pathlib import Path
import pytest
import torch
from hypothesis import given, settings, strategies as st

import cascade_lab  # noqa: F401  (registers cascade_triton)
from cascade_lab.kernels.moe import (MoEConfig, fused_moe, moe_align_block_size, moe_reference,
                                     triton_unavailable_reason)

DEVICE = "cuda" if torch.cuda.is_available() and triton_unavailable_reason("cuda") is None else "cpu"
pytestmark = pytest.mark.skipif(triton_unavailable_reason(DEVICE) is not None,
                                reason=f"Triton cannot run here: {triton_unavailable_reason(DEVICE)}")

DECODE = MoEConfig(decode=True, BLOCK_N=16, BLOCK_K=32)
GEMM = MoEConfig(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, GROUP_M=2)


def inputs(T, H, I, E, k, dtype=torch.float32, seed=0, skew=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=g)
    up = torch.randn(E, I, H, generator=g) / H ** 0.5
    down = torch.randn(E, H, I, generator=g) / I ** 0.5
    scores = torch.rand(T, E, generator=g)
    if skew: scores[:, : max(1, E // 4)] += 1   # most experts get nothing: empty groups
    ids = scores.argsort(dim=1, descending=True)[:, :k]
    w = torch.rand(T, k, generator=g) * 2.5
    return [t.to(DEVICE) for t in (hidden.to(dtype), up.to(dtype), down.to(dtype), ids, w)]


def rel_err(got, ref):
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6)).item()


# T from 1 to 300, experts 4 to 64, top-k 1 to 8, sizes that are not multiples of any block size
SHAPES = [(1, 40, 24, 4, 1), (1, 33, 17, 64, 8), (2, 20, 50, 8, 2), (3, 16, 16, 4, 4), (5, 37, 29, 16, 6),
          (8, 64, 48, 32, 6), (13, 45, 31, 8, 3), (31, 24, 40, 64, 8), (64, 48, 36, 12, 5), (127, 19, 23, 5, 2),
          (300, 40, 24, 64, 6), (300, 17, 33, 4, 4)]


@pytest.mark.parametrize("cfg", [DECODE, GEMM], ids=["decode", "gemm"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-H{}-I{}-E{}-k{}".format(*s))
def test_kernels_match_reference(shape, cfg):
    if cfg.decode and shape[0] > 32:
        pytest.skip("the GEMV path serves decoding batches; one interpreted program per pair is too slow here")
    hidden, up, down, ids, w = inputs(*shape)
    assert rel_err(fused_moe(hidden, up, down, ids, w, config=cfg), moe_reference(hidden, up, down, ids, w)) < 1e-5


@pytest.mark.parametrize("cfg", [DECODE, GEMM], ids=["decode", "gemm"])
def test_empty_experts_and_fp16(cfg):
    hidden, up, down, ids, w = inputs(24 if cfg.decode else 50, 40, 24, 32, 2, skew=True)
    assert len(ids.unique()) <= 8      # 24 of 32 experts receive no token
    assert rel_err(fused_moe(hidden, up, down, ids, w, config=cfg), moe_reference(hidden, up, down, ids, w)) < 1e-5
    hidden, up, down, ids, w = inputs(20, 48, 40, 8, 3, dtype=torch.float16)
    ref = moe_reference(hidden.float(), up.float(), down.float(), ids, w)
    assert rel_err(fused_moe(hidden, up, down, ids, w, config=cfg), ref) < 3e-3


@settings(max_examples=12, deadline=None)
@given(T=st.integers(1, 40), H=st.integers(16, 48), I=st.integers(16, 48), E=st.integers(4, 64), k=st.integers(1, 8),
       decode=st.booleans(), seed=st.integers(0, 2**16))
def test_kernels_random_shapes(T, H, I, E, k, decode, seed):
    k = min(k, E)
    hidden, up, down, ids, w = inputs(T, H, I, E, k, seed=seed)
    got = fused_moe(hidden, up, down, ids, w, config=DECODE if decode else GEMM)
    assert rel_err(got, moe_reference(hidden, up, down, ids, w)) < 1e-5


def test_default_configs_pick_both_paths():
    # no explicit config: tiny batches take the GEMV path, larger ones the grouped GEMM
    for T in (1, 100):
        hidden, up, down, ids, w = inputs(T, 24, 20, 8, 2)
        assert rel_err(fused_moe(hidden, up, down, ids, w), moe_reference(hidden, up, down, ids, w)) < 1e-5


def test_align_block_size_invariants():
    g = torch.Generator().manual_seed(1)
    for T, E, k, bm in [(1, 4, 1, 16), (37, 8, 3, 16), (300, 64, 6, 64), (5, 128, 6, 16)]:
        ids = torch.rand(T, E, generator=g).argsort(1)[:, :k]
        sp, be, n = moe_align_block_size(ids, bm, E)
        n = n.item()
        assert n % bm == 0 and n <= sp.numel()
        real = sp[:n][sp[:n] < T * k]
        assert sorted(real.tolist()) == list(range(T * k))        # every pair exactly once
        assert (sp[n:] == T * k).all()
        flat = ids.reshape(-1)
        for b in range(n // bm):                                  # each block holds one expert's pairs
            rows = sp[b * bm:(b + 1) * bm]
            rows = rows[rows < T * k].long()
            assert (flat[rows] == be[b]).all()


def test_bad_shapes_are_refused():
    hidden, up, down, ids, w = inputs(4, 24, 20, 8, 2)
    with pytest.raises(ValueError, match="shape mismatch"): fused_moe(hidden, up, down.transpose(1, 2), ids, w)
    with pytest.raises(ValueError, match="does not match"): fused_moe(hidden, up, down, ids, w[:, :1])
    assert fused_moe(hidden[:0], up, down, ids[:0], w[:0]).shape == (0, 24)


# ---- whole models ---------------------------------------------------------------------------------------
def tiny_config(**kw):
    from transformers import NemotronHConfig
    base = dict(vocab_size=97, hidden_size=48, num_hidden_layers=6, hybrid_override_pattern="ME*EME",
                n_routed_experts=12, num_experts_per_tok=3, moe_intermediate_size=24,
                moe_shared_expert_intermediate_size=48, intermediate_size=48, num_attention_heads=4,
                num_key_value_heads=2, head_dim=12, mamba_num_heads=4, mamba_head_dim=12, ssm_state_size=8,
                n_groups=2, chunk_size=16, conv_kernel=4, expand=1, n_group=1, topk_group=1)
    base.update(kw)
    cfg = NemotronHConfig(**base)
    return cfg


@pytest.mark.parametrize("T", [1, 9, 40])
def test_whole_model_logits_match_eager(T):
    from transformers import NemotronHForCausalLM
    torch.manual_seed(0)
    model = NemotronHForCausalLM(tiny_config()).float().eval().to(DEVICE)
    with torch.no_grad():   # a non-zero correction bias, as in a trained model
        for m in model.modules():
            if hasattr(m, "e_score_correction_bias"): m.e_score_correction_bias.normal_(0, 0.1)
    ids = torch.randint(0, 97, (2, T), generator=torch.Generator().manual_seed(T)).to(DEVICE)
    with torch.no_grad():
        model.set_experts_implementation("eager")
        ref = model(ids).logits
        model.set_experts_implementation("cascade_triton")
        got = model(ids).logits
    assert rel_err(got, ref) < 1e-4


def test_from_pretrained_with_cascade_triton(tmp_path):
    from transformers import NemotronHForCausalLM
    torch.manual_seed(0)
    NemotronHForCausalLM(tiny_config()).save_pretrained(tmp_path)
    model = NemotronHForCausalLM.from_pretrained(tmp_path, experts_implementation="cascade_triton", dtype=torch.float32)
    model = model.to(DEVICE)               # natively, Triton runs on the GPU's tensors
    assert model.config._experts_implementation == "cascade_triton"
    ids = torch.tensor([[1, 5, 7, 9]], device=DEVICE)
    with torch.no_grad():
        got = model(ids).logits
        model.set_experts_implementation("eager")
        assert rel_err(got, model(ids).logits) < 1e-4


def test_gated_experts_are_refused():
    from cascade_lab.kernels.moe import cascade_triton_experts_forward

    class Gated(torch.nn.Module):
        has_gate = True
    with pytest.raises(NotImplementedError, match="non-gated"):
        cascade_triton_experts_forward(Gated(), torch.zeros(1, 4), torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1))


def test_shipped_h200_table_is_what_cascade_triton_uses_there():
    "The launch configs tuned on an H200 (benchmarks/gpu_check.sh) ship as package data and are found by device name."
    import json
    from cascade_lab.kernels.moe import CONFIG_DIR, DEFAULT_CONFIGS, MoEConfig, config_file_name, get_moe_config
    name = "NVIDIA_H200"                    # torch.cuda.get_device_name() of an H200, spaces as underscores
    path = Path(CONFIG_DIR) / config_file_name(128, 1856, name)
    table = {int(t): MoEConfig(**c) for t, c in json.loads(path.read_text()).items()}
    assert sorted(table) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    for T in (1, 3, 48, 700, 4096, 10_000):
        nearest = min(table, key=lambda t: abs(t - T))
        assert get_moe_config(128, 1856, T, name) == table[nearest]
    assert get_moe_config(128, 1856, 1, name) != DEFAULT_CONFIGS[0][1]      # the tuned entry, not the default
    assert get_moe_config(128, 1856, 1, "NVIDIA_A100-SXM4-80GB") == DEFAULT_CONFIGS[0][1]   # another GPU: defaults
