"""Tests of `cascade_lab.trace` that a notebook cannot hold well: the import in a fresh interpreter, every bad
file and its message, byte-level damage, the atomic write under a failing writer, the versioning machinery,
the comparison helpers on hand-made cases, hypothesis round trips, and the benchmark script."""
import dataclasses
import json
import os
import random
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as stn
from hypothesis import HealthCheck, given, settings, strategies as st

import cascade_lab.trace as trace_mod
from cascade_lab.chat import PYTHON_TOOL
from cascade_lab.parse import parse_output
from cascade_lab.trace import (FORMAT_NAME, FORMAT_VERSION, ModelInfo, Routing, Segment, Step, Trace, TraceFileError,
                               TraceFileNotFoundError, char_offsets, common_prefix, config_hash, expert_load_by_segment,
                               jaccard_by_layer, segments_from_turn, synthetic_trace)

ROOT = Path(__file__).resolve().parents[1]
F16_REL = 2.0 ** -11          # float16 keeps 11 significant bits: round-to-nearest error <= 2^-11 relative


def error_of(fn) -> TraceFileError:
    with pytest.raises(TraceFileError) as e: fn()
    return e.value


def _rewrite(data: bytes, drop=(), **meta) -> bytes:
    "The file `data` written again by safetensors with arrays dropped and metadata entries replaced."
    arrays = {k: v for k, v in stn.load(data).items() if k not in drop}
    hlen = struct.unpack("<Q", data[:8])[0]
    old = json.loads(data[8:8 + hlen])["__metadata__"]
    return stn.save(arrays, metadata={**old, **meta})


# --- the module is data: no torch ------------------------------------------------------------------------
def test_import_leaves_torch_and_transformers_out():
    code = ("import sys, cascade_lab.trace as t; tr = t.synthetic_trace(20); t.Trace.from_bytes(tr.to_bytes()); "
            "print(sorted(m for m in ('torch', 'transformers', 'triton', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- round trips -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, steps, logits, experts", [(0, 1, False, 128), (1, 1, False, 128), (64, 3, True, 128),
                                                        (40, 2, False, 300), (33, 1, True, 1)])
def test_save_load_round_trip(tmp_path, n, steps, logits, experts):
    tr = synthetic_trace(n, n_layers=4, k=min(6, experts), num_experts=experts, seed=n, steps=steps, logits=logits)
    p = tr.save(tmp_path / "t.trace.safetensors")
    back = Trace.load(p)
    assert back == tr and repr(back) == repr(tr)
    assert back.text == tr.text and back.num_prompt_tokens == tr.num_prompt_tokens
    stored = stn.load_file(p)
    assert stored["token_ids"].dtype == np.int32 and stored["logprobs"].dtype == np.float32
    assert stored["routing.experts"].dtype == (np.uint8 if experts <= 256 else np.uint16)
    for name in ("routing.weights", "routing.scores") + (("routing.logits",) if logits else ()):
        assert stored[name].dtype == np.float16
    assert ("routing.logits" in stored) == logits
    assert ("routing.recorded" in stored) == (n > 0)          # the last token is unrecorded
    # a second save over the first gives the same trace back
    tr.save(p)
    assert Trace.load(p) == tr


def test_float16_rounding_is_within_tolerance(tmp_path):
    rng = np.random.default_rng(1)
    T, L, k, E = 50, 3, 4, 16
    ex = np.argsort(rng.random((T, L, E)), axis=-1)[..., :k]
    w = (rng.random((T, L, k)) * 2.5 + 1e-3).astype(np.float32)
    s = (rng.random((T, L, k)) + 0.2).astype(np.float64)
    lg = rng.normal(0, 4, (T, L, E)).astype(np.float32)
    mi = ModelInfo("m", "real", "h", 7, [1, 3, 5], E, k)
    lp = -rng.exponential(2.0, T).astype(np.float64)
    tr = Trace(model=mi, token_ids=rng.integers(0, 131072, T), tokens=["x"] * T, routing=Routing(ex, w, s, [1, 3, 5], E, lg), logprobs=lp,
               steps=[Step((0, 10), (10, T))])
    back = Trace.load(tr.save(tmp_path / "f.trace.safetensors"))
    for got, want in ((back.routing.weights, w), (back.routing.scores, s), (back.routing.logits, lg)):
        assert got.dtype == np.float16
        err = np.abs(got.astype(np.float64) - want)
        assert (err <= np.abs(want) * F16_REL + 2.0 ** -25).all()   # + half the smallest subnormal step
        assert err.max() > 0                                        # it did round
    assert np.array_equal(back.logprobs, lp.astype(np.float32))     # logprobs stay float32
    assert np.array_equal(back.routing.experts, ex)


def test_round_trip_without_routing_and_awkward_content(tmp_path):
    mi = ModelInfo("remote-model", "remote", "", 52, trace_mod._NEMOTRON_MOE_LAYERS, 128, 6)
    tokens = ["<|im_start|>", "user\n", "é中🙂", "\ud800", "", "\x00\n", "\\\"'"]
    tr = Trace(model=mi, token_ids=[1, 2, 3, 4, 5, 6, 7], tokens=tokens, prompt="p", messages=[{"role": "user", "content": "é中🙂 \ud800"}],
               tools=[PYTHON_TOOL], steps=[Step((0, 3), (3, 7), None, "x", finish_reason="length")],
               segments=[Segment("prompt", 0, 3), Segment("answer", 3, 7, 0, (0, 4))],
               sampling={"temperature": 0.0, "greedy": True, "thinking_budget": None},
               timings={"prefill_s": float("inf"), "decode_s": 0.5}, routing_note="remote server did not return routed experts",
               meta={"np": np.float32(0.5), "ints": np.arange(3), "set": {2, 1}, "tuple": (1, 2), "path": Path("/x")})
    back = Trace.from_bytes(tr.to_bytes())
    assert back.routing is None and back.routing_note == "remote server did not return routed experts"
    assert back.tokens == tokens and back.messages == tr.messages and back.tools == [PYTHON_TOOL]
    assert back.timings["prefill_s"] == float("inf")
    # values JSON cannot hold come back in their JSON form
    assert back.meta == {"np": 0.5, "ints": [0, 1, 2], "set": [1, 2], "tuple": [1, 2], "path": "/x"}
    assert back.segments == tr.segments and back.steps == tr.steps
    assert np.isnan(back.logprobs).all() and back.logprobs.dtype == np.float32
    assert "no routing (remote server did not return routed experts)" in repr(back)
    with pytest.raises(ValueError, match="JSON cannot save"):
        dataclasses.replace(tr, meta={(1, 2): "tuple key"}).to_bytes()


def test_default_routing_note_and_repr():
    tr = synthetic_trace(30, n_layers=2)
    bare = Trace(model=tr.model, token_ids=tr.token_ids, tokens=tr.tokens)
    assert bare.routing_note == "routing was not recorded" and bare.num_prompt_tokens == 30 and bare.text == ""
    r = repr(tr)
    assert r.startswith("Trace(synthetic [demo]: 30 tokens = ") and "1 step," in r and "routing 2 MoE layers x top-6 of 128" in r
    assert repr(tr.routing) == "Routing(30 tokens x 2 MoE layers, top-6 of 128; weights, scores, 1 unrecorded)"


# --- bad files: each has its message --------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved():
    return synthetic_trace(120, n_layers=3, steps=2).to_bytes()


def test_missing_file(tmp_path):
    e = error_of(lambda: Trace.load(tmp_path / "nope.trace.safetensors"))
    assert isinstance(e, TraceFileNotFoundError) and isinstance(e, FileNotFoundError)
    assert str(e) == f"no trace file at {str(tmp_path / 'nope.trace.safetensors')!r}"


def test_directory(tmp_path):
    assert "is a directory, not a trace file" in str(error_of(lambda: Trace.load(tmp_path)))


@pytest.mark.parametrize("data", [b"", b"short", random.Random(0).randbytes(5000), b'{"not": "safetensors at all"}' * 10,
                                  struct.pack("<Q", 20) + b"not json at all!!!!!" + b"x" * 40,
                                  struct.pack("<Q", 4) + b"[12]"])
def test_not_a_trace(tmp_path, data):
    (tmp_path / "f").write_bytes(data)
    msg = str(error_of(lambda: Trace.load(tmp_path / "f")))
    assert msg.startswith(f"{tmp_path / 'f'}: not a cascade-lab trace file (not a safetensors file)"), msg


def test_safetensors_file_without_the_tag():
    data = stn.save({"w": np.zeros((2, 2), np.float32)}, metadata={"format": "pt"})
    msg = str(error_of(lambda: Trace.from_bytes(data)))
    assert msg == ("<bytes>: not a cascade-lab trace: a safetensors file without the format tag 'cascade-lab-trace' "
                   "(model weights, or a file another program wrote?)")
    assert "without the format tag" in str(error_of(lambda: Trace.from_bytes(stn.save({"w": np.zeros(2)}))))


def test_a_large_file_that_is_not_a_trace_is_refused_from_its_header(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(stn.save({"w": np.zeros(4, np.float32)}))
    with open(p, "r+b") as f: f.truncate(2 << 30)          # 2 GB, sparse: reading it all would show
    assert "without the format tag" in str(error_of(lambda: Trace.load(p)))


def test_truncated_in_the_arrays(tmp_path, saved):
    (tmp_path / "half").write_bytes(saved[:len(saved) // 2])
    msg = str(error_of(lambda: Trace.load(tmp_path / "half")))
    assert "truncated trace file" in msg and "bytes of array data, the header describes" in msg


def test_truncated_in_the_header():
    data = Trace(model=ModelInfo("m", "demo", "", 3, [1], 4, 2), token_ids=list(range(50)), tokens=["word"] * 50).to_bytes()
    hlen = struct.unpack("<Q", data[:8])[0]
    assert hlen > len(data) // 2                     # this trace's file is mostly header
    msg = str(error_of(lambda: Trace.from_bytes(data[:len(data) // 2])))
    assert "truncated trace file: it ends inside its header" in msg


def test_every_cut_and_every_damaged_header_byte_gives_a_trace_file_error(saved):
    "No prefix of a trace file, and no single damaged header byte, makes loading raise anything else."
    hlen = struct.unpack("<Q", saved[:8])[0]
    for cut in list(range(0, 8 + hlen, 37)) + list(range(8 + hlen, len(saved), 997)):
        error_of(lambda: Trace.from_bytes(saved[:cut]))
    rng = random.Random(3)
    for _ in range(300):
        i = rng.randrange(0, 8 + hlen)
        bad = bytearray(saved); bad[i] = (bad[i] + rng.randrange(1, 256)) % 256
        try: Trace.from_bytes(bytes(bad))
        except TraceFileError: pass                 # a damaged byte inside a string can still be a valid trace


def test_damaged_array_bytes_load_or_fail_cleanly(saved):
    hlen = struct.unpack("<Q", saved[:8])[0]
    rng = random.Random(4)
    for _ in range(50):
        bad = bytearray(saved)
        for _ in range(20): bad[rng.randrange(8 + hlen, len(saved))] = 255   # e.g. expert ids out of range
        try: Trace.from_bytes(bytes(bad))
        except TraceFileError as e: assert "invalid trace content" in str(e)


def test_corrupt_header(saved):
    hlen = struct.unpack("<Q", saved[:8])[0]
    head = saved[8:8 + hlen]
    i = head.index(b'"token_ids"')                   # damage the tensor table, away from the format tag
    bad = saved[:8 + i] + b"\x00\xff}{" + saved[8 + i + 4:]
    msg = str(error_of(lambda: Trace.from_bytes(bad)))
    assert "corrupt trace file: its header is not valid JSON" in msg
    msg = str(error_of(lambda: Trace.from_bytes(_rewrite(saved, trace="{not json"))))
    assert "corrupt trace header: the trace description is missing or not JSON" in msg
    msg = str(error_of(lambda: Trace.from_bytes(_rewrite(saved, version="one"))))
    assert msg == "<bytes>: corrupt trace header: unreadable format version 'one'"
    assert "format version 0 does not exist" in str(error_of(lambda: Trace.from_bytes(_rewrite(saved, version="0"))))


def test_newer_version(saved):
    msg = str(error_of(lambda: Trace.from_bytes(_rewrite(saved, version=str(FORMAT_VERSION + 1)), "x.trace")))
    assert msg.startswith(f"x.trace: written by a newer cascade-lab (format version {FORMAT_VERSION + 1}); upgrade cascade-lab to read it")
    assert f"reads format versions up to {FORMAT_VERSION}" in msg


def test_missing_arrays(saved):
    msg = str(error_of(lambda: Trace.from_bytes(_rewrite(saved, drop=("routing.weights", "entropies")))))
    assert msg == "<bytes>: incomplete trace file: missing array(s) entropies, routing.weights"


def test_invalid_content(saved):
    doc = json.loads(stn_meta(saved)["trace"])
    doc["model"]["kind"] = "laptop"
    msg = str(error_of(lambda: Trace.from_bytes(_rewrite(saved, trace=json.dumps(doc)))))
    assert "invalid trace content: ValueError: ModelInfo.kind must be one of" in msg
    doc = json.loads(stn_meta(saved)["trace"]); del doc["tokens"]
    assert "invalid trace content: KeyError" in str(error_of(lambda: Trace.from_bytes(_rewrite(saved, trace=json.dumps(doc)))))


def stn_meta(data: bytes) -> dict:
    hlen = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + hlen])["__metadata__"]


def test_header_is_tagged_and_versioned(saved):
    meta = stn_meta(saved)
    assert meta["format"] == FORMAT_NAME and meta["version"] == str(FORMAT_VERSION) and set(meta) == {"format", "version", "trace"}
    assert json.loads(meta["trace"])["format"] == FORMAT_NAME


# --- atomic write -----------------------------------------------------------------------------------------
def _half_then_fail(f, data):
    f.write(data[:len(data) // 2]); f.flush()
    raise OSError(28, "No space left on device")


def test_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    old, new = synthetic_trace(50, n_layers=2, seed=1), synthetic_trace(80, n_layers=2, seed=2)
    p = old.save(tmp_path / "run.trace.safetensors")
    before = p.read_bytes()
    monkeypatch.setattr(trace_mod, "_write_all", _half_then_fail)
    with pytest.raises(OSError, match="No space left"): new.save(p)
    assert p.read_bytes() == before and Trace.load(p) == old
    assert sorted(os.listdir(tmp_path)) == ["run.trace.safetensors"]      # the temporary file is gone
    # a failure at the rename too
    monkeypatch.undo()
    def no_replace(*a): raise PermissionError("replace refused")
    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(PermissionError): new.save(p)
    monkeypatch.undo()
    assert Trace.load(p) == old and sorted(os.listdir(tmp_path)) == ["run.trace.safetensors"]
    assert Trace.load(new.save(p)) == new


def test_failed_first_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(trace_mod, "_write_all", _half_then_fail)
    with pytest.raises(OSError): synthetic_trace(20, n_layers=2).save(tmp_path / "a.trace.safetensors")
    assert os.listdir(tmp_path) == []


def test_a_save_keeps_the_file_mode(tmp_path):
    tr = synthetic_trace(10, n_layers=2)
    p = tr.save(tmp_path / "a.trace.safetensors")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    p.chmod(0o600)
    tr.save(str(p))
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


# --- versioning machinery -------------------------------------------------------------------------------
def test_older_versions_are_upgraded(monkeypatch, saved):
    def v2_to_v3(doc, arrays):
        doc = {**doc, "meta": {**doc["meta"], "upgraded": True}}
        return doc, arrays
    monkeypatch.setattr(trace_mod, "FORMAT_VERSION", 3)
    monkeypatch.setattr(trace_mod, "_UPGRADES", {**trace_mod._UPGRADES, 2: v2_to_v3})
    back = Trace.from_bytes(saved)                   # a version-2 file read by "version-3" code
    assert back.meta["upgraded"] is True
    assert stn_meta(back.to_bytes())["version"] == "3"
    assert "format version 4" in str(error_of(lambda: Trace.from_bytes(_rewrite(saved, version="4"))))


def test_version_1_files_read(saved):
    meta = stn_meta(saved)
    doc = json.loads(meta["trace"])
    del doc["answer"]
    for s in doc["steps"]: del s["timings"], s["context_start"]
    v1 = stn.save(stn.load(saved), metadata={**meta, "version": "1", "trace": json.dumps(doc)})
    assert Trace.from_bytes(v1) == Trace.from_bytes(saved)


# --- validation ---------------------------------------------------------------------------------------------
def test_validation_messages():
    tr = synthetic_trace(20, n_layers=2)
    with pytest.raises(ValueError, match="Trace.token_ids must be a 1-D integer array"):
        Trace(model=tr.model, token_ids=np.zeros((2, 2), int), tokens=["a"] * 4)
    with pytest.raises(ValueError, match=r"Trace.token_ids must lie in \[0, 2\*\*31\)"):
        Trace(model=tr.model, token_ids=[-1], tokens=["a"])
    with pytest.raises(ValueError, match="Trace.logprobs must be 20 real numbers"):
        dataclasses.replace(tr, logprobs=np.zeros(19))
    with pytest.raises(ValueError, match="the steps end at token 15"):
        dataclasses.replace(tr, steps=[Step((0, 5), (5, 15))])
    with pytest.raises(ValueError, match="Trace.model must be a ModelInfo"):
        dataclasses.replace(tr, model={"name": "x"})
    with pytest.raises(ValueError, match="Routing.recorded must be booleans"):
        Routing(np.zeros((2, 1, 1), int), None, None, [1], 4, recorded=[0, 2])
    with pytest.raises(ValueError, match="Routing.weights must hold real numbers"):
        Routing(np.zeros((2, 1, 1), int), np.array([[["a"]], [["b"]]]), None, [1], 4)
    with pytest.raises(ValueError, match="Segment .start, end. must satisfy"):
        Segment("answer", 5, 3)
    with pytest.raises(ValueError, match="Step.tool_results must be a list of dicts"):
        Step((0, 1), (1, 2), tool_results=["42"])


def test_config_hash_and_model_info():
    ref = {"architectures": ["NemotronHForCausalLM"], "model_type": "nemotron_h", "num_hidden_layers": 52,
           "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME", "n_routed_experts": 128,
           "num_experts_per_tok": 6, "n_shared_experts": 1, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
           "transformers_version": "4.55.4", "nested": {"b": 1, "a": [1.5, None]}}
    h = config_hash(ref)
    assert h == config_hash(json.loads(json.dumps(ref, sort_keys=True))) == config_hash(json.dumps(ref).encode())
    assert h != config_hash({**ref, "nested": {"b": 2, "a": [1.5, None]}})

    class Cfg:                                       # a transformers config stand-in
        def to_dict(self): return {**ref, "_name_or_path": "/models/x", "transformers_version": "5.0"}
    assert config_hash(Cfg()) == h
    mi = ModelInfo.from_config(Cfg(), "cascade", "real")
    assert mi.moe_layers == trace_mod._NEMOTRON_MOE_LAYERS and (mi.num_layers, mi.num_experts, mi.top_k) == (52, 128, 6)
    assert mi.config_hash == h and mi.extra["n_shared_experts"] == 1 and mi.extra["norm_topk_prob"] is True
    with pytest.raises(ValueError, match="names no layer types"): ModelInfo.from_config({"n_routed_experts": 2}, "x")
    with pytest.raises(ValueError, match="config_hash takes a config dict"): config_hash(42)


# --- helpers on hand-made cases ---------------------------------------------------------------------------
MI = ModelInfo("toy", "demo", "", 5, [1, 3], 8, 3)


def toy(ids, experts, recorded=None, segments=()):
    return Trace(model=MI, token_ids=ids, tokens=["t"] * len(ids), segments=list(segments),
                 routing=Routing(np.array(experts), None, None, [1, 3], 8, recorded=recorded))


def test_common_prefix():
    a = toy([1, 2, 3, 4], [[[0, 1, 2]] * 2] * 4)
    assert common_prefix(a, a) == 4
    assert common_prefix(a, [1, 2, 9, 4]) == 2 and common_prefix([1, 2], a) == 2
    assert common_prefix(a, []) == 0 and common_prefix([7], a) == 0


def test_jaccard_by_layer():
    rows_a = [[[0, 1, 2], [0, 1, 2]], [[3, 4, 5], [0, 1, 2]], [[0, 1, 2], [5, 6, 7]]]
    rows_b = [[[2, 1, 0], [2, 3, 4]], [[3, 4, 6], [0, 1, 2]], [[7, 6, 5], [5, 6, 7]]]
    a, b = toy([1, 2, 3], rows_a), toy([1, 2, 3], rows_b)
    # layer 0: 1, 2/4, 0 -> 0.5; layer 1: 1/5, 1, 1 -> 2.2/3
    np.testing.assert_allclose(jaccard_by_layer(a, b), [0.5, 2.2 / 3])
    np.testing.assert_allclose(jaccard_by_layer(a, b, tokens=[0]), [1.0, 0.2])
    np.testing.assert_allclose(jaccard_by_layer(a, b, tokens=np.array([False, True, True])), [0.25, 1.0])
    np.testing.assert_allclose(jaccard_by_layer(a, b, tokens=slice(1, None)), [0.25, 1.0])
    # an unrecorded token in either trace is left out
    np.testing.assert_allclose(jaccard_by_layer(a, toy([1, 2, 3], rows_b, recorded=[0, 1, 1])), [0.25, 1.0])
    # repeated ids count once (sets): {0, 1} vs {0, 1, 2} -> 2/3
    c, d = toy([1], [[[0, 0, 1], [0, 1, 2]]]), toy([1], [[[0, 1, 2], [1, 1, 1]]])
    np.testing.assert_allclose(jaccard_by_layer(c, d), [2 / 3, 1 / 3])
    # symmetric, and the tokens need not be in the common prefix when asked for explicitly
    np.testing.assert_allclose(jaccard_by_layer(b, a), jaccard_by_layer(a, b))
    e = toy([9, 2, 3], rows_b)
    assert np.isnan(jaccard_by_layer(a, e)).all()
    np.testing.assert_allclose(jaccard_by_layer(a, e, tokens=[0]), [1.0, 0.2])
    with pytest.raises(ValueError, match="token index out of range"): jaccard_by_layer(a, b, tokens=[3])
    other = Trace(model=ModelInfo("o", "demo", "", 5, [1, 4], 8, 3), token_ids=[1], tokens=["t"], routing=Routing(np.zeros((1, 2, 3), int), None, None, [1, 4], 8))
    with pytest.raises(ValueError, match="MoE layers differ"): jaccard_by_layer(a, other)


def test_jaccard_chunks_agree_with_a_loop():
    a, b = synthetic_trace(5000, n_layers=3, seed=1), synthetic_trace(5000, n_layers=3, seed=2)
    got = jaccard_by_layer(a, b, tokens=slice(0, 4999))
    ea, eb = a.routing.experts, b.routing.experts
    want = [np.mean([len(set(ea[t, l]) & set(eb[t, l])) / len(set(ea[t, l]) | set(eb[t, l])) for t in range(4999)]) for l in range(3)]
    np.testing.assert_allclose(got, want)


def test_expert_load_and_by_segment():
    ex = [[[0, 1, 2], [0, 1, 2]], [[0, 1, 3], [7, 6, 5]], [[0, 4, 5], [0, 1, 2]], [[7, 1, 2], [0, 1, 2]]]
    segs = [Segment("prompt", 0, 1), Segment("reasoning", 1, 2), Segment("answer", 2, 3), Segment("reasoning", 3, 4)]
    t = toy([1, 2, 3, 4], ex, recorded=[1, 1, 1, 0], segments=segs)
    load = t.routing.expert_load()
    assert load.tolist() == [[3, 2, 1, 1, 1, 1, 0, 0], [2, 2, 2, 0, 0, 1, 1, 1]]
    assert t.routing.expert_load(layer=-1, tokens=[1]).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    by = expert_load_by_segment(t)
    assert sorted(by) == ["answer", "prompt", "reasoning"]
    assert by["reasoning"].tolist() == [[1, 1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1, 1]]   # token 3 unrecorded
    assert (by["prompt"] + by["reasoning"] + by["answer"] == load).all()
    assert t.token_segments().tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="has no routing"): expert_load_by_segment(Trace(model=MI, token_ids=[1], tokens=["t"]))
    with pytest.raises(ValueError, match="layer is a position"): t.routing.expert_load(layer=2)


def test_routing_concat():
    a = Routing(np.zeros((2, 2, 3), int) + [0, 1, 2], np.ones((2, 2, 3)), np.ones((2, 2, 3)), [1, 3], 8, recorded=[1, 0])
    b = Routing(np.zeros((3, 2, 3), int) + [3, 4, 5], np.ones((3, 2, 3)), np.ones((3, 2, 3)), [1, 3], 8)
    c = a.concat(b)
    assert len(c) == 5 and c.recorded.tolist() == [1, 0, 1, 1, 1] and c.experts[3, 0].tolist() == [3, 4, 5]
    assert b.concat(b).recorded is None
    with pytest.raises(ValueError, match="layers, num_experts and k"): a.concat(Routing(np.zeros((1, 2, 3), int), None, None, [1, 4], 8))


def test_segments_from_turn_cases():
    # instruct mode (no reasoning), a truncated tool call, zero-width tokens (a stop token with no text)
    toks = ["Sure", ".", " ", "", "<tool_call>\n<function=f>", "\n<parameter=a>\n1", ""]
    text = "".join(toks)
    turn = parse_output(text, thinking=False)
    segs = segments_from_turn(turn, char_offsets(toks), token_start=100, step=2)
    # the empty token at 103 sits where the call starts, so it is the call's; the final empty one (a stop token)
    # sits past the end of every part and is in none
    assert [(s.kind, s.start, s.end, s.step) for s in segs] == [("answer", 100, 102, 2), ("tool_call", 103, 106, 2)]
    assert segs[0].chars == turn.content_spans[0] and segs[1].chars == turn.tool_calls[0].span
    # a token straddling two parts goes to the one it overlaps most; segments never overlap
    toks = ["ab", "c</think>", "\nxyz"]
    turn = parse_output("".join(toks))
    segs = segments_from_turn(turn, char_offsets(toks), 0)
    assert [(s.kind, s.start, s.end) for s in segs] == [("reasoning", 0, 2), ("answer", 2, 3)]
    # an empty generation has no segments; bad offsets are refused
    assert segments_from_turn(parse_output(""), np.zeros((0, 2)), 0) == []
    with pytest.raises(ValueError, match="ordered, non-overlapping"): segments_from_turn(turn, [[0, 3], [2, 5]], 0)
    assert char_offsets(["ab", "", "c"]).tolist() == [[0, 2], [2, 2], [2, 3]] and char_offsets([]).shape == (0, 2)


def test_step_from_turn():
    out = "Think.\n</think>\nOk.\n<tool_call>\n<function=stateful_python_code_exec>\n<parameter=code>\nprint(1)\n</parameter>\n</function>\n</tool_call>\n"
    turn = parse_output(out, tools=[PYTHON_TOOL])
    s = Step.from_turn(turn, (0, 10), (10, 30), [{"name": "stateful_python_code_exec", "output": "1\n", "error": False, "seconds": 0.1}], "tool_calls")
    assert (s.reasoning, s.content, s.finish_reason, s.errors) == ("Think.", "Ok.", "tool_calls", [])
    assert s.tool_calls == [{"name": "stateful_python_code_exec", "arguments": {"code": "print(1)"}, "raw": turn.tool_calls[0].raw}]
    assert Step(**json.loads(json.dumps(dataclasses.asdict(s)))) == s


# --- hypothesis round trips ----------------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=5), ch, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 30), layers=st.integers(1, 3), experts=st.sampled_from([1, 2, 7, 128, 256, 257, 300]),
       steps=st.integers(1, 3), logits=st.booleans(), seed=st.integers(0, 2**16), routing=st.sampled_from(["full", "ids", "none"]),
       tokens=st.lists(st.text(max_size=4), min_size=30, max_size=30), meta=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
       messages=st.lists(st.dictionaries(st.text(max_size=6), json_values, max_size=3), max_size=3))
def test_hypothesis_round_trip(n, layers, experts, steps, logits, seed, routing, tokens, meta, messages):
    tr = synthetic_trace(n, layers, k=min(experts, 1 + seed % 6), num_experts=experts, seed=seed, steps=steps, logits=logits)
    r = tr.routing
    if routing == "ids": r = Routing(r.experts, None, None, r.layers, r.num_experts, recorded=r.recorded)
    elif routing == "none": r = None
    tr = dataclasses.replace(tr, tokens=tokens[:n], meta=meta, messages=messages, routing=r)
    data = tr.to_bytes()
    back = Trace.from_bytes(data)
    assert back == tr
    assert back.to_bytes() == data or Trace.from_bytes(back.to_bytes()) == tr    # stable under a second round trip


# --- the benchmark script ----------------------------------------------------------------------------------
def test_bench_script_runs(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_trace.py"), "--tokens", "300", "--runs", "1",
                          "--dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    for s in ("save (Trace.save", "load (Trace.load", "file size", "the loaded trace equals the saved one"):
        assert s in out.stdout
    assert os.listdir(tmp_path) == []


def test_traces_written_before_the_restructure_still_load():
    "Files saved by cascade-lab 0.0.1 (tests/data) load, and say what they said then."
    data = ROOT / "tests" / "data"
    syn = Trace.load(data / "trace_v2_0.0.1.trace.safetensors")
    fresh = synthetic_trace(64, n_layers=3, k=2, num_experts=8, seed=3, steps=2, logits=True)
    fresh.created, fresh.cascade_lab_version = syn.created, syn.cascade_lab_version
    assert syn == fresh
    tir = Trace.load(data / "demo_tir_0.0.1.trace.safetensors")
    assert len(tir.steps) == 2 and tir.answer == "54" and tir.meta["grade"]["correct"] and tir.routing is not None
    gen = Trace.load(data / "demo_generate_0.0.1.trace.safetensors")
    assert len(gen.steps) == 1 and gen.model.kind == "demo" and len(gen) == 121
