"""The demo model's pieces: problems and their answers, the training data, the tokenizer and its chat template
(which must agree with `render_chat`), a short training run, and the shipped model's files (`cascade_lab.demo`);
then the model at work and measured (`cascade_lab.demo_eval`): the routing figures and the evaluation's report."""
import json
import random
import subprocess
import sys

import pytest

from cascade_lab.chat import PYTHON_TOOL, render_chat
from cascade_lab.demo import (CHAT_TEMPLATE, DEMO_DIR, DEMO_PATTERN, FAMILIES, SEEDS, SPECIAL_IDS, TIR_INSTRUCTION,
                              Conversation, TrainSettings, buggy_code, build_tokenizer, encode_examples, make_conversations,
                              make_problem, make_problems, model_card, tir_conversation, tool_code, training_examples,
                              train_demo)
from cascade_lab.demo_eval import _routing_stats, evaluate_demo
from cascade_lab.sandbox import PythonSandbox


def test_problems_are_deterministic_varied_and_exact():
    a, b = make_problems(200, seed=1), make_problems(200, seed=1)
    assert a == b and a != make_problems(200, seed=2)
    # varied: the one-number combinatorics questions (n people, n runners: 28 values, 4 wordings) may repeat
    assert len({p["question"] for p in a}) >= 190
    assert len({p["question"] for p in a if p["family"] != "combinatorics"}) == sum(p["family"] != "combinatorics" for p in a)
    for p in a:
        assert set(p) == {"question", "answer", "family"} and p["answer"].isdigit() and p["family"] in FAMILIES
    # every answer is what the problem's own code prints (the formulas are right)
    rng = random.Random(5)
    with PythonSandbox(timeout=30) as sb:
        for _ in range(30):
            p = make_problem(rng)
            sb.reset()
            assert sb.run(tool_code(p)).output == str(p.answer)


def test_tool_replies_in_the_training_data_are_what_the_tool_sends():
    """Every tool response the model is trained on is what the real Python tool (the sandbox) answers to that code:
    the buggy first calls' tracebacks, the fixed calls' output, the checks' True."""
    seen = set()
    with PythonSandbox(timeout=30) as sb:
        for i in range(60):
            conv = tir_conversation(make_problem(random.Random(i)), random.Random(i))
            for m, reply in zip(conv, conv[1:]):
                if reply["role"] != "tool": continue
                sb.reset()
                code = m["tool_calls"][0]["function"]["arguments"]["code"]
                assert sb.run(code).output == reply["content"], (i, code)
                seen.add("Traceback" in reply["content"] and reply["content"].splitlines()[-1].split(":")[0])
        for i, p in enumerate(make_problem(random.Random(100 + i)) for i in range(12)):
            wrong, reply, why, fixed = buggy_code(p, random.Random(i))
            sb.reset()
            assert sb.run("\n".join(wrong)).output == reply and why
            assert str(p.answer) in sb.run("\n".join(fixed)).output.split()
    assert {"NameError", "TypeError", False} <= seen, seen          # both kinds of error, and calls that work


def test_seeds_are_disjoint():
    sets = {k: {p["question"] for p in make_problems(300, s) if p["family"] != "combinatorics"} for k, s in SEEDS.items()}
    assert len(set(SEEDS.values())) == 3
    # held-out problems are overwhelmingly new (short templates can coincide by chance); the one-number
    # combinatorics questions are few (112 of them) and the model card says their scores are not held out
    assert len(sets["eval"] & sets["train"]) < 10


def test_training_examples_target_exactly_the_generated_text():
    for conv in make_conversations(60, seed=3):
        for ex in training_examples(conv):
            for a, b in ex.targets:
                assert ex.text[b] == "\n" and ex.text[b - len("<|im_end|>"):b] == "<|im_end|>"
                assert ex.text[:a].endswith("<|im_start|>assistant\n<think>\n" if conv.thinking else
                                            "<|im_start|>assistant\n<think></think>")


def test_kinds_and_tir_format():
    convs = make_conversations(400, seed=4)
    kinds = {c.kind for c in convs}
    assert kinds == {"tir", "thinking", "instruct", "multi"}
    tir = next(c for c in convs if c.kind == "tir")
    text = training_examples(tir)[0].text
    assert TIR_INSTRUCTION in text and "<function=stateful_python_code_exec>" in text and "<tool_response>" in text
    assert render_chat([], [PYTHON_TOOL]) in text      # the model card's tool system prompt
    texts = [training_examples(c)[0].text for c in convs if c.kind == "tir"]
    assert any("Traceback (most recent call last)" in t for t in texts)     # a bug, read and fixed
    assert any("== " in t and "True" in t for t in texts)                  # a call, then a check
    thinking = [c.messages[1]["reasoning_content"] for c in convs if c.kind == "thinking"]
    assert any("Wait" in t or "wait" in t for t in thinking) and any("carry" in t for t in thinking)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [e.text for c in make_conversations(300, seed=9) for e in training_examples(c)]
    return build_tokenizer(texts)


def test_tokenizer_special_tokens_and_digits(tokenizer):
    for tok, i in SPECIAL_IDS.items():
        assert tokenizer.convert_tokens_to_ids(tok) == i
    for t in ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>"]:
        assert len(tokenizer(t, add_special_tokens=False).input_ids) == 1
    ids = tokenizer("x = 1234", add_special_tokens=False).input_ids
    assert [tokenizer.decode([i]) for i in ids][-4:] == ["1", "2", "3", "4"]
    text = "héllo 日本 \\boxed{42} <tool_call>\n"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text


def test_shipped_tokenizer_template_agrees_with_render_chat(tokenizer):
    # the same hand-written conversations the parity tests use, minus the forms a Jinja template cannot take
    from test_chat_parity import CASES
    checked = 0
    for name, (messages, tools) in CASES.items():
        msgs = [{k: v for k, v in m.items() if v is not None} for m in messages]
        if not msgs or any(isinstance(c.get("function", c).get("arguments"), str)
                           for m in msgs for c in (m.get("tool_calls") or [])):
            continue
        for opts in ({}, {"add_generation_prompt": True}, {"add_generation_prompt": True, "enable_thinking": False},
                     {"truncate_history_thinking": False}):
            try: want = render_chat(msgs, tools, **opts)
            except ValueError: continue
            assert tokenizer.apply_chat_template(msgs, tools=tools, tokenize=False, **opts) == want, (name, opts)
            checked += 1
    assert checked > 150


def test_encode_examples_masks_all_but_the_targets(tokenizer):
    conv = make_conversations(1, seed=0)[0]
    ex = training_examples(conv)[0]
    (ids, labels), = encode_examples(tokenizer, [ex])
    kept = tokenizer.decode([t for t, l in zip(ids, labels) if l != -100])
    assert kept.endswith("<|im_end|>") and "<|im_start|>user" not in kept and "<|im_start|>system" not in kept


def test_short_training_run_writes_a_loadable_model(tmp_path):
    log = train_demo(tmp_path, TrainSettings(steps=4, batch_size=4, conversations=80), progress=False)
    assert len(log["loss"]) == 4 and all(l > 0 for l in log["loss"])
    from cascade_lab.model import load_model
    model, tok = load_model(tmp_path, device="cpu")
    biases = [m.e_score_correction_bias for m in model.modules() if hasattr(m, "e_score_correction_bias")]
    assert len(biases) == DEMO_PATTERN.count("E") and all(b.abs().sum() > 0 for b in biases)   # balancing moved them
    assert json.loads((tmp_path / "training.json").read_text())["settings"]["steps"] == 4
    assert model.generation_config.eos_token_id == [2, 11]


def test_shipped_demo_model_files():
    assert (DEMO_DIR / "config.json").is_file() and (DEMO_DIR / "README.md").is_file()
    size = sum(f.stat().st_size for f in DEMO_DIR.iterdir())
    assert size <= 20 * 2 ** 20, f"the shipped demo model is {size / 2**20:.1f} MB (limit 20 MB)"
    card = (DEMO_DIR / "README.md").read_text()
    assert "NOT Nemotron-Cascade-2" in card and "Measured quality" in card


def test_shipped_files_are_what_the_code_makes():
    # the card is model_card() of the shipped config, training log and evaluation; the tokenizer's template is ours
    shipped = {f: json.loads((DEMO_DIR / f"{f}.json").read_text()) for f in ("config", "training", "evaluation")}
    assert model_card(shipped["config"], shipped["training"], shipped["evaluation"]) == (DEMO_DIR / "README.md").read_text()
    assert (DEMO_DIR / "chat_template.jinja").read_text() == CHAT_TEMPLATE


def test_routing_stats():
    import torch
    even, skewed, unused, none = _routing_stats([torch.ones(16), torch.tensor([1., 1, 1, 5]), torch.tensor([0., 2, 2, 0]),
                                                 torch.zeros(4)])
    assert even == {"min_share_of_uniform": 1.0, "entropy": 2.773, "max_entropy": 2.773}
    assert skewed["min_share_of_uniform"] == 0.5 and 0 < skewed["entropy"] < skewed["max_entropy"] == 1.386
    assert unused == {"min_share_of_uniform": 0.0, "entropy": 0.693, "max_entropy": 1.386}
    assert none == {"min_share_of_uniform": 0.0, "entropy": 0.0, "max_entropy": 0.0}


def test_evaluate_demo_reports_figures_and_gates():
    from cascade_lab.model import load_model
    model, tok = load_model(device="cpu")
    res = evaluate_demo(model, tok, n=1, progress=False)
    assert (res["n"], res["seed"]) == (1, SEEDS["eval"])
    assert set(res["tir"]) == {"first_turn_tool_call_ok", "end_to_end_accuracy", "by_family", "calls_per_problem",
                               "first_call_failed", "recovered_after_a_failed_call"}
    assert set(res["recovery"]) == {"n", "next_call_fixes_it", "by_family"}
    assert set(res["thinking"]) == {"well_formed", "accuracy", "by_family", "mean_thinking_tokens", "backtracking_share"}
    assert set(res["instruct"]) == {"well_formed", "accuracy", "by_family"}
    n_moe = DEMO_PATTERN.count("E")
    assert len(res["routing"]) == n_moe and all(0 < r["entropy"] <= r["max_entropy"] for r in res["routing"])
    assert all(len(v) == n_moe for v in res["segment_divergence"]["js"].values()) and res["segment_divergence"]["js"]
    assert len(res["gates"]) == 7 and all(isinstance(v, bool) for v in res["gates"].values())
    assert res["tir"]["first_turn_tool_call_ok"] == 1.0     # the shipped model calls the tool on a held-out problem
    assert not any(h for m in model.modules() for h in getattr(m, "_forward_hooks", {}).values()
                   if type(m).__name__ == "NemotronHTopkRouter"), "the expert counting hooks must be removed"
