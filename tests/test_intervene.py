"""Routing interventions on tiny random NemotronH models (transformers' real model class, random weights), next to
the demo-model checks in nbs/19_intervene.ipynb: the interventions' exact effects, replay, segment scopes followed
in a background thread, the trace's record, `rescore` through another checkpoint, and the errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cascade_lab.generate import generate
from cascade_lab.intervene import (Scope, ablate, bias, compare_runs, force, intervene, replay, rescore,
                                   routing_diff, wanted_routing)
from cascade_lab.record import stream_events
from cascade_lab.routing import RoutingRecorder

CHAT = [{"role": "user", "content": "What is 12 + 30?"}]


def tiny(seed: int, vocab: int):
    from transformers import NemotronHConfig, NemotronHForCausalLM
    cfg = NemotronHConfig(vocab_size=vocab, hidden_size=48, num_hidden_layers=6, hybrid_override_pattern="ME*EME",
                          n_routed_experts=12, num_experts_per_tok=3, moe_intermediate_size=24,
                          moe_shared_expert_intermediate_size=48, intermediate_size=48, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=12, mamba_num_heads=4, mamba_head_dim=12, ssm_state_size=8,
                          n_groups=2, chunk_size=16, conv_kernel=4, expand=1, n_group=1, topk_group=1,
                          routed_scaling_factor=2.5, norm_topk_prob=True)
    torch.manual_seed(seed)
    model = NemotronHForCausalLM(cfg).float().eval()
    with torch.no_grad():            # a non-zero correction bias, as in a trained model
        for m in model.modules():
            if hasattr(m, "e_score_correction_bias"): m.e_score_correction_bias.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def tok():
    from cascade_lab.model import load_model
    return load_model()[1]          # the demo model's tokenizer: a real chat format around the random model


@pytest.fixture(scope="module")
def model(tok):
    return tiny(0, len(tok))


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 97, (1, 48), generator=torch.Generator().manual_seed(1))


def run(model, ids, interventions=()):
    with torch.no_grad(), RoutingRecorder(model) as rec:
        if not interventions: return model(input_ids=ids).logits[0], rec.result()
        with intervene(model, interventions): logits = model(input_ids=ids).logits[0]
    return logits, rec.result()


def test_reroute_removes_the_expert_and_nothing_before_its_first_use(model, ids):
    base_logits, base = run(model, ids)
    L = base.layers[1]
    chosen = base.experts[:, 1]
    first = {int(x): int(np.argmax((chosen == x).any(-1))) for x in np.unique(chosen)}
    e, p0 = max(first.items(), key=lambda kv: kv[1])          # the expert first chosen the latest
    assert p0 > 0
    logits, routed = run(model, ids, [ablate(L, e)])
    assert not (routed.experts[:, 1] == e).any()
    assert (logits[:p0] - base_logits[:p0]).abs().max().item() == 0
    assert (routed.experts[:p0] == base.experts[:p0]).all()


def test_force_acts_on_its_positions_only_and_renorm_keeps_the_total(model, ids):
    _, base = run(model, ids)
    L, e = base.layers[0], 11
    _, forced = run(model, ids, [force(L, e, positions=range(10, 20))])
    has = (forced.experts[:, 0] == e).any(-1)
    assert has[10:20].all() and (forced.experts[:10] == base.experts[:10]).all()
    _, renormed = run(model, ids, [ablate(L, int(base.experts[5, 0, 0]), mode="renorm")])
    w = renormed.weights[:, 0]
    assert np.allclose(w.sum(-1), base.weights[:, 0].sum(-1), atol=1e-5)


def test_bias_moves_the_selection_toward_the_expert(model, ids):
    _, base = run(model, ids)
    L, E = base.layers[2], 12
    e = int(np.argmin(np.bincount(base.experts[:, 2].ravel(), minlength=E)))
    _, biased = run(model, ids, [bias(L, {e: 5.0})])
    assert (biased.experts[:, 2] == e).any(-1).all()


def test_replay_reproduces_logits_and_holds_sets_on_an_edited_prompt(model, ids):
    base_logits, base = run(model, ids)
    logits, _ = run(model, ids, replay(base))
    assert (logits - base_logits).abs().max().item() <= 1e-5
    edited = ids.clone()
    edited[0, 3] = (edited[0, 3] + 1) % 97
    _, kept = run(model, edited, replay(base, weights="recorded"))
    assert (np.sort(kept.experts, -1) == np.sort(base.experts, -1)).all()


def test_errors_name_the_problem(model, ids):
    with pytest.raises(ValueError, match="has no MoE router"): intervene(model, [ablate(0, 1)])
    with pytest.raises(ValueError, match="out of range"): intervene(model, [ablate(1, 99)])
    with pytest.raises(RuntimeError, match="matched no token"): run(model, ids, [ablate(1, 2, positions=[10_000])])
    with pytest.raises(RuntimeError, match="never ran"):
        with intervene(model, [ablate(1, 2)]): pass
    with pytest.raises(ValueError, match="one sequence"):
        run(model, ids.repeat(2, 1), [ablate(1, 2, segment="reasoning")])
    with pytest.raises(ValueError, match="use one or more of"): Scope.of(segment="thoughts")


def test_segment_scope_in_a_streamed_run_changes_only_its_kind(model, tok):
    "The run goes on in stream_events' background thread; the scope is decided there from the run's events."
    e, L = 4, 1
    with intervene(model, [force(L, e, segment="reasoning")]) as iv:
        stream = stream_events(generate, model, tok, CHAT, max_new_tokens=24, greedy=True)
        events = list(stream)
    tr = stream.trace
    assert type(events[-1]).__name__ == "RunFinished" and tr is not None
    rec = tr.meta["interventions"]
    changed = np.array(rec["wanted"][str(L)]["tokens"])
    reasoning = np.zeros(len(tr), bool)
    for sg in tr.segments:
        if sg.kind == "reasoning": reasoning[sg.start:sg.end] = True
    assert len(changed) and reasoning[changed].all()
    col = list(tr.routing.layers).index(L)
    read = reasoning & tr.routing.recorded_mask()
    assert (tr.routing.experts[read, col] == e).any(-1).mean() >= 0.9       # all but a tag's token at the edge
    wanted = wanted_routing(tr)
    assert (wanted.experts[changed, col] != tr.routing.experts[changed, col]).any(-1).all()
    assert iv.report[0]["tokens_in_scope"] > 0


def test_rescore_through_another_checkpoint_is_aligned(model, tok):
    tr = generate(model, tok, CHAT, max_new_tokens=16, greedy=True)
    same = rescore(tr, model)
    m = tr.routing.recorded_mask()
    assert (same.experts[m] == tr.routing.experts[m]).all()
    other = rescore(tr, tiny(1, len(tok)), mode="forward")
    assert other.experts.shape == tr.routing.experts.shape and list(other.layers) == list(tr.routing.layers)
    d = routing_diff(tr, other)
    assert d["aligned_tokens"] == len(tr) and d["prompt"]["jaccard"].mean() < 0.9      # another checkpoint routes otherwise


def test_compare_runs_kl_is_zero_without_a_change_and_positive_with_one(model, tok):
    a = generate(model, tok, CHAT, max_new_tokens=16, greedy=True)
    m = a.routing.recorded_mask()
    busy = np.argsort(-np.bincount(a.routing.experts[m, 0].ravel(), minlength=12))[:2]    # layer 1's most used experts
    ivs = [ablate(1, busy)]
    with intervene(model, ivs): b = generate(model, tok, CHAT, max_new_tokens=16, greedy=True)
    same = compare_runs(a, a, model)
    assert same.first_divergence is None and np.nanmax(same.kl) == 0
    c = compare_runs(a, b, model, b_interventions=ivs)
    assert c.jaccard[0] < 1
    gen = a.generated_mask()
    assert np.isfinite(c.kl[gen][1:]).all() and np.nanmean(c.kl) > 0 and np.isnan(c.kl[~gen]).all()


def test_experiment_table_on_two_problems(model, tok):
    "The experiment's plumbing with its own sandbox: a baseline and one condition, two problems, every column filled."
    from cascade_lab.intervene import experiment
    ex = experiment(model, tok, {"ablated": [ablate(1, [0, 1, 2])]}, n=2, progress=False, max_steps=2, max_new_tokens=24)
    rows = ex.table
    assert [r["condition"] for r in rows] == ["baseline", "ablated"] and all(r["runs"] == 2 for r in rows)
    assert len(ex.comparisons["ablated"]) == 2 and all(c.labels == ("baseline", "ablated") for c in ex.comparisons["ablated"])
    for t in ex.runs["ablated"]:
        assert t.meta["interventions"]["interventions"][0]["experts"] == [0, 1, 2] and "grade" in t.meta
    assert "condition" in repr(ex).splitlines()[0]
    with pytest.raises(ValueError, match="'baseline' names the runs"): experiment(model, tok, {"baseline": []})


def test_a_batch_row_records_the_interventions_and_says_why_no_counts(model, tok):
    "A batched generate replays each row's events after the batch ran: the traces say so instead of recording zeros."
    ivs = [ablate(1, [0, 1, 2])]
    with intervene(model, ivs): rows = generate(model, tok, [CHAT, CHAT], max_new_tokens=8, greedy=True)
    for tr in rows:
        rec = tr.meta["interventions"]
        assert rec["interventions"][0]["experts"] == [0, 1, 2] and rec["report"] is None and "one row of a batch" in rec["note"]
        with pytest.raises(ValueError, match="one row of a batch"): wanted_routing(tr)
