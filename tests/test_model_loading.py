"""`cascade_lab.model.load_model` on a tiny NemotronH checkpoint written in the real Hugging Face layout, and
every refusal it makes, each checked on its message. CPU only, no network. The published config.json is an
optional oracle (found by tests/reference_oracle.py): the test that needs it skips, with the reason, when it is not at hand."""
import fnmatch
import os
import subprocess
import sys
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import NemotronHConfig, NemotronHForCausalLM, PreTrainedTokenizerFast

import cascade_lab.model as cm
from cascade_lab.model import (HUB_ID, CheckpointNotFoundError, CorruptCheckpointError, InsufficientMemoryError,
                               ModelLoadError, estimate_memory, inspect_checkpoint, load_model)
from reference_oracle import find_reference

TINY = dict(vocab_size=300, hidden_size=64, hybrid_override_pattern="MEM*E", num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, intermediate_size=32, moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=64, n_routed_experts=8, num_experts_per_tok=2, mamba_num_heads=4,
            mamba_head_dim=16, ssm_state_size=16, n_groups=2, chunk_size=16, routed_scaling_factor=2.5,
            n_group=1, topk_group=1, norm_topk_prob=True, mlp_hidden_act="relu2")
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
IDS = torch.tensor([[1, 5, 17, 42, 3, 299, 8, 11]])


def hf_layout(state_dict: dict) -> dict:
    """transformers' state dict in the layout of the published checkpoints: `backbone.` for `model.`, and the
    stacked experts [E, out, in] split into one `experts.K.{up,down}_proj.weight` tensor per expert."""
    out = {}
    for name, t in state_dict.items():
        if name.startswith("model."): name = "backbone." + name[len("model."):]
        if name.endswith(("mixer.experts.up_proj", "mixer.experts.down_proj")):
            prefix, proj = name.rsplit(".", 1)
            for k in range(t.shape[0]): out[f"{prefix}.{k}.{proj}.weight"] = t[k].clone().contiguous()
        else:
            out[name] = t.clone().contiguous()
    return out


def write_checkpoint(path: Path) -> dict:
    """A tiny random NemotronH written by hand as the real checkpoints are (not with save_pretrained, so the test
    does not depend on how transformers saves): two shards and an index, `hybrid_override_pattern` in config.json,
    a word-level tokenizer. Returns the tensors written."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tensors = hf_layout(NemotronHForCausalLM(NemotronHConfig(**TINY)).state_dict())
    names = sorted(tensors)
    # layers 0-2 (with the experts of layer 1) in the first shard, the rest in the second
    first = [n for n in names if n.startswith(("backbone.embeddings", "backbone.layers.0.", "backbone.layers.1.",
                                               "backbone.layers.2."))]
    parts = {SHARDS[0]: first, SHARDS[1]: [n for n in names if n not in first]}
    weight_map = {}
    for shard, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, str(path / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}, indent=2))
    (path / "config.json").write_text(json.dumps({"architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h",
                                                  "num_hidden_layers": 5, "torch_dtype": "float32", **TINY}, indent=2))
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 300)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>").save_pretrained(path)
    return tensors


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    return path, write_checkpoint(path)


@pytest.fixture
def copy(ckpt, tmp_path):
    "A copy of the tiny checkpoint to damage."
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt[0], dst)
    return dst


def logits(model, ids=IDS):
    with torch.no_grad(): return model(ids).logits


# ---- the checkpoint is laid out as the real one ----

def test_checkpoint_has_the_real_layout(ckpt):
    path, tensors = ckpt
    weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(set(weight_map.values())) == list(SHARDS)
    assert all(k.startswith("backbone.") for k in weight_map if k != "lm_head.weight")
    for layer in (1, 4):  # the MoE layers, one in each shard
        for k in range(8):
            assert weight_map[f"backbone.layers.{layer}.mixer.experts.{k}.up_proj.weight"] == SHARDS[layer // 4]
            assert tensors[f"backbone.layers.{layer}.mixer.experts.{k}.up_proj.weight"].shape == (32, 64)
            assert tensors[f"backbone.layers.{layer}.mixer.experts.{k}.down_proj.weight"].shape == (64, 32)
        for name in ("gate.weight", "gate.e_score_correction_bias", "shared_experts.up_proj.weight",
                     "shared_experts.down_proj.weight"):
            assert f"backbone.layers.{layer}.mixer.{name}" in weight_map
    assert not any(".experts.up_proj" in k or k.startswith("model.") for k in weight_map)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "nemotron_h" and config["hybrid_override_pattern"] == "MEM*E"
    assert "layers_block_type" not in config


# ---- loading ----

def test_load_gives_transformers_model(ckpt):
    path, tensors = ckpt
    model, tokenizer = load_model(path, device="cpu", dtype=torch.float32, experts="eager")
    assert isinstance(model, NemotronHForCausalLM) and not model.training
    assert model.config._experts_implementation == "eager" and model.dtype == torch.float32
    ref = NemotronHForCausalLM.from_pretrained(path)  # transformers' own loading, its default experts backend
    ref_eager = NemotronHForCausalLM.from_pretrained(path, experts_implementation="eager")
    assert torch.equal(logits(model), logits(ref_eager))
    torch.testing.assert_close(logits(model), logits(ref), atol=1e-5, rtol=1e-5)
    # the per-expert tensors were stacked into [experts, out, in], in both shards
    for layer, k in ((1, 5), (4, 2)):
        experts = model.model.layers[layer].mixer.experts
        assert experts.up_proj.shape == (8, 32, 64) and experts.down_proj.shape == (8, 64, 32)
        assert torch.equal(experts.up_proj[k], tensors[f"backbone.layers.{layer}.mixer.experts.{k}.up_proj.weight"])
        assert torch.equal(experts.down_proj[k], tensors[f"backbone.layers.{layer}.mixer.experts.{k}.down_proj.weight"])
        assert torch.equal(model.model.layers[layer].mixer.gate.e_score_correction_bias,
                           tensors[f"backbone.layers.{layer}.mixer.gate.e_score_correction_bias"])
    assert tokenizer("w5 w17 w42").input_ids == [5, 17, 42] and tokenizer.eos_token_id == 2


def test_defaults_on_cpu_and_bf16(ckpt):
    path, _ = ckpt
    if not torch.cuda.is_available():
        model, _ = load_model(path)
        assert model.device == torch.device("cpu") and model.dtype == torch.float32
        assert model.config._experts_implementation == cm.CPU_EXPERTS == "grouped_mm"
    model, _ = load_model(path, device="cpu", dtype="bf16")
    mixer = model.model.layers[1].mixer
    assert mixer.experts.up_proj.dtype == torch.bfloat16
    assert mixer.gate.weight.dtype == torch.float32 and mixer.gate.e_score_correction_bias.dtype == torch.float32


def test_estimate_counts_the_headers(ckpt):
    path, tensors = ckpt
    est = estimate_memory(path, torch.float32, cache_budget_gb=0)
    assert est.params == sum(t.numel() for t in tensors.values())
    assert est.weights_bytes == sum(t.numel() * 4 for t in tensors.values())
    router = sum(t.numel() for n, t in tensors.items() if ".gate." in n)
    bf16 = estimate_memory(path, "bf16", cache_budget_gb=2)
    assert bf16.fp32_params == router and bf16.weights_bytes == (est.params - router) * 2 + router * 4
    assert bf16.total_bytes == bf16.weights_bytes + 2_000_000_000
    assert estimate_memory(path / "config.json", "fp32", 0).params == est.params  # the config alone agrees


OFFICIAL_CONFIG = find_reference("config")   # optional oracle: the published config.json, or why it is not here


@pytest.mark.skipif(not OFFICIAL_CONFIG, reason=OFFICIAL_CONFIG.reason)
def test_estimate_of_the_official_config():
    "The published config gives the model card's size: 31.58 B parameters, 63.2 GB of weights in bfloat16."
    config = OFFICIAL_CONFIG.json()
    assert config["model_type"] == "nemotron_h" and config["n_routed_experts"] == 128
    assert config["num_experts_per_tok"] == 6 and config["hidden_size"] == 2688
    est = estimate_memory(config, "bf16", cache_budget_gb=0)
    assert est.params == 31_577_940_288, est
    assert round(est.weights_gb, 1) == 63.2 and est.fp32_params == 23 * (128 * 2688 + 128), est


def test_hub_id_from_the_local_cache(ckpt, tmp_path, monkeypatch):
    path, _ = ckpt
    repo = tmp_path / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    shutil.copytree(path, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, _ = load_model(HUB_ID, device="cpu", dtype=torch.float32, experts="eager")
    ref, _ = load_model(path, device="cpu", dtype=torch.float32, experts="eager")
    assert torch.equal(logits(model), logits(ref))


def _fake_hub(source: Path, dest: Path, calls: list):
    "A stand-in for snapshot_download with nothing cached and the network on: 'downloads' from `source`."
    def snapshot_download(repo_id, *, local_files_only=False, allow_patterns=None, **kw):
        calls.append("cache" if local_files_only else "configs" if allow_patterns else "all")
        if local_files_only: raise LocalEntryNotFoundError("not in the cache")
        dest.mkdir(exist_ok=True)
        for f in source.iterdir():
            if allow_patterns is None or any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                shutil.copy(f, dest / f.name)
        return str(dest)
    return snapshot_download


def test_hub_download_checks_memory_before_the_weights(ckpt, tmp_path, monkeypatch):
    path, _ = ckpt
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []
    monkeypatch.setattr(cm, "snapshot_download", _fake_hub(path, tmp_path / "dl", calls))
    with pytest.raises(InsufficientMemoryError):
        load_model(HUB_ID, device="cpu", cache_budget_gb=1e6)
    assert calls == ["cache", "configs"]  # refused on the config, before fetching the weights
    assert not list((tmp_path / "dl").glob("*.safetensors"))
    calls.clear()
    model, _ = load_model(HUB_ID, device="cpu", dtype=torch.float32, experts="eager")
    assert calls == ["cache", "configs", "all"]
    assert torch.equal(logits(model), logits(NemotronHForCausalLM.from_pretrained(path, experts_implementation="eager")))


# ---- refusals, each with its message ----

def test_hub_id_not_cached_and_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as e:
        load_model(HUB_ID, device="cpu")
    m = str(e.value)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    assert f"{HUB_ID!r} is not in the local Hugging Face cache ({tmp_path})" in m
    assert f"hf download {HUB_ID}" in m and f"huggingface-cli download {HUB_ID}" in m
    assert "HF_HOME" in m and "HF_HUB_OFFLINE" in m


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="does not exist") as e:
        load_model(tmp_path / "nowhere", device="cpu")
    assert str(tmp_path / "nowhere") in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_no_config_json(copy):
    (copy / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError) as e:
        load_model(copy, device="cpu")
    m = str(e.value)
    assert f"{copy} has no config.json" in m and "not a Hugging Face checkpoint directory" in m
    assert SHARDS[0] in m  # says what the directory does hold


def test_other_model_type(copy):
    config = json.loads((copy / "config.json").read_text())
    config.update(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"])
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as e:
        load_model(copy, device="cpu")
    m = str(e.value)
    assert "model type 'qwen3_moe'" in m and "Qwen3MoeForCausalLM" in m and "'nemotron_h'" in m


def test_missing_shard(copy):
    (copy / SHARDS[1]).unlink()
    with pytest.raises(CheckpointNotFoundError) as e:
        load_model(copy, device="cpu")
    m = str(e.value)
    assert SHARDS[1] in m and SHARDS[0] not in m and "missing 1 of the 2 shards" in m


def test_no_weights_at_all(copy):
    for f in [*SHARDS, "model.safetensors.index.json"]: (copy / f).unlink()
    with pytest.raises(CheckpointNotFoundError, match="no safetensors weights"):
        load_model(copy, device="cpu")


def test_truncated_shard(copy):
    data = (copy / SHARDS[0]).read_bytes()
    (copy / SHARDS[0]).write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError) as e:
        load_model(copy, device="cpu")
    m = str(e.value)
    assert f"shard {SHARDS[0]}" in m and "truncated" in m and "--force-download" in m


@pytest.mark.parametrize("garbage", [b"", b"<html>502 Bad Gateway</html>", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"])
def test_garbage_shard(copy, garbage):
    (copy / SHARDS[1]).write_bytes(garbage)
    with pytest.raises(CorruptCheckpointError) as e:
        load_model(copy, device="cpu")
    assert f"shard {SHARDS[1]}" in str(e.value) and "not a valid safetensors file" in str(e.value)


def test_index_and_shards_disagree(copy):
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    index["weight_map"]["backbone.norm_f.weight"] = SHARDS[0]  # it is in the second shard
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpointError, match=rf"'backbone.norm_f.weight' is in {SHARDS[0]}"):
        load_model(copy, device="cpu")


def test_no_tokenizer(copy):
    for f in ("tokenizer.json", "tokenizer_config.json"): (copy / f).unlink()
    with pytest.raises(CheckpointNotFoundError, match="has no tokenizer"):
        load_model(copy, device="cpu")


@pytest.mark.parametrize("dtype", ["int8", "fp8", "float64", torch.float64, torch.int8, 16])
def test_unsupported_dtype(ckpt, dtype):
    with pytest.raises(ModelLoadError) as e:
        load_model(ckpt[0], device="cpu", dtype=dtype)
    m = str(e.value)
    assert f"unsupported dtype {dtype!r}" in m
    assert all(s in m for s in ("torch.bfloat16", "'bf16'", "'fp16'", "'fp32'"))


@pytest.mark.parametrize("device", ["mps", "tpu", "gpu", "cuda:99", "xpu:0", 0])
def test_unsupported_or_unavailable_device(ckpt, device):
    with pytest.raises(ModelLoadError) as e:
        load_model(ckpt[0], device=device)
    m = str(e.value)
    assert repr(device) in m and "Available here: 'cpu'" in m
    assert ("not available" if str(device).startswith("cuda") else "unsupported device") in m


def test_unknown_experts_backend(ckpt):
    with pytest.raises(ModelLoadError) as e:
        load_model(ckpt[0], device="cpu", experts="turbo")
    m = str(e.value)
    assert "unknown experts backend 'turbo'" in m
    assert all(repr(n) in m for n in ("auto", "eager", "batched_mm", "grouped_mm", "cascade_triton"))


def test_triton_asked_where_it_cannot_run(ckpt, monkeypatch):
    moe = pytest.importorskip("cascade_lab.kernels.moe")
    reason = "Triton kernels need a CUDA GPU; on a CPU they run only under the Triton interpreter"
    monkeypatch.setattr(moe, "triton_unavailable_reason", lambda device: reason)
    with pytest.raises(ModelLoadError) as e:
        load_model(ckpt[0], device="cpu", experts="cascade_triton")
    m = str(e.value)
    assert "experts='cascade_triton' cannot run on cpu" in m and reason in m
    assert "experts='grouped_mm'" in m and "TRITON_INTERPRET=1" in m


def test_triton_experts_under_the_interpreter(ckpt):
    pytest.importorskip("cascade_lab.kernels.moe")
    why = cm.triton_experts_problem("cpu")
    if why is not None: pytest.skip(why)
    model, _ = load_model(ckpt[0], device="cpu", dtype=torch.float32, experts="cascade_triton")
    assert model.config._experts_implementation == "cascade_triton"
    ref, _ = load_model(ckpt[0], device="cpu", dtype=torch.float32, experts="eager")
    torch.testing.assert_close(logits(model), logits(ref), atol=1e-4, rtol=1e-4)


def test_memory_refusal_gives_the_numbers(ckpt):
    path, _ = ckpt
    with pytest.raises(InsufficientMemoryError) as e:
        load_model(path, device="cpu", dtype=torch.float32, cache_budget_gb=1e6)
    err, m = e.value, str(e.value)
    est = estimate_memory(path, torch.float32, cache_budget_gb=1e6)
    assert err.estimate == est and err.available_bytes < est.total_bytes
    assert f"needs {cm._gb(est.weights_bytes)} for the weights" in m
    assert "cache budget of 1,000,000.0 GB" in m and f"{cm._gb(est.total_bytes)}, and" in m
    assert f"{cm._gb(err.available_bytes)} is available" in m
    assert "dtype='bf16'" in m and "device_map='auto'" in m and "vLLM" in m and "SGLang" in m


def test_memory_refusal_on_a_small_machine(ckpt, monkeypatch):
    path, _ = ckpt
    monkeypatch.setattr(cm, "available_memory", lambda device: 100_000)
    with pytest.raises(InsufficientMemoryError) as e:
        load_model(path, device="cpu", dtype="bf16", cache_budget_gb=0)
    m = str(e.value)
    est = estimate_memory(path, "bf16", cache_budget_gb=0)
    assert f"{est.params:,} parameters in bfloat16" in m and cm._gb(est.weights_bytes) in m
    assert f"{cm._gb(100_000)} is available" in m and "dtype='bf16'" not in m  # already bf16
    model, _ = load_model(path, device="cpu", dtype="bf16", cache_budget_gb=0, check_memory=False)
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize("budget", [-1, float("nan"), "4", True])
def test_bad_cache_budget(ckpt, budget):
    with pytest.raises(ModelLoadError, match="cache_budget_gb must be a number of GB >= 0"):
        load_model(ckpt[0], device="cpu", cache_budget_gb=budget)


def test_missing_demo_model_files(tmp_path, monkeypatch):
    import cascade_lab.model
    monkeypatch.setattr(cascade_lab.model, "DEMO_DIR", tmp_path / "demo_model")     # where load_model() looks
    with pytest.raises(CheckpointNotFoundError) as e:
        load_model()
    m = str(e.value)
    assert "demo model is missing" in m and "cascade-lab train-demo" in m and HUB_ID in m


def test_demo_model_loads_offline_in_a_fresh_interpreter():
    # what a user on a laptop does first: no network, no argument
    code = ("import time; t = time.perf_counter(); from cascade_lab.model import load_model; t1 = time.perf_counter(); "
            "m, tok = load_model(); t2 = time.perf_counter(); "
            "print(type(m).__name__, m.device, tok.convert_tokens_to_ids('<|im_end|>'), f'{t1 - t:.2f} {t2 - t1:.2f}')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    name, device, im_end, import_s, load_s = r.stdout.split()
    assert (name, device, im_end) == ("NemotronHForCausalLM", "cpu", "11")
    print(f"import {import_s} s, load_model() {load_s} s")


def test_inspect_reports_the_checkpoint(ckpt):
    info = inspect_checkpoint(ckpt[0])
    assert info.shards == list(SHARDS) and len(info.tensors) == len(ckpt[1])
    assert info.tensors["backbone.layers.4.mixer.experts.3.up_proj.weight"] == ("F32", (32, 64))


def test_auto_experts_on_a_gpu(monkeypatch):
    moe = pytest.importorskip("cascade_lab.kernels.moe")
    monkeypatch.setattr(moe, "triton_unavailable_reason", lambda device: None)
    assert cm.resolve_experts("auto", "cuda:0") == "cascade_triton"
    monkeypatch.setattr(moe, "triton_unavailable_reason", lambda device: "triton is not installed")
    with pytest.warns(UserWarning, match=r"cannot run on cuda:0 \(triton is not installed\); using 'grouped_mm' instead"):
        assert cm.resolve_experts("auto", "cuda:0") == "grouped_mm"


def test_neither_a_directory_nor_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="neither a local directory .* nor a valid hub id"):
        load_model("no--such/model", device="cpu")
