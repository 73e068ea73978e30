"""The event stream of a run: a demo tool-loop run's events rebuild the very trace the run returns, come in the
documented order, and carry the text, the parsed parts and the tool output as they happened. And the
restructured runners give the same traces as cascade-lab 0.0.1 did for the same runs (tests/data)."""
from pathlib import Path

import numpy as np
import pytest

from cascade_lab.chat import MATH_INSTRUCTION
from cascade_lab.demo import make_problems
from cascade_lab.parse import ContentDelta, ReasoningDelta, ToolCallFinished, ToolCallStarted
from cascade_lab.record import (Parsed, RunFinished, RunStarted, SamplingParams, StepFinished, StepGenerated,
                                TokenDelta, ToolFinished, ToolOutput, ToolStarted, TraceBuilder, stream_events)
from cascade_lab.sandbox import PythonSandbox
from cascade_lab.tir import run_tools, solve
from cascade_lab.trace import Trace

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def local():
    from cascade_lab.model import load_model
    return load_model()


@pytest.fixture(scope="module")
def tir_run(local):
    "A demo TIR run (greedy, through the sandbox) with every event it emitted."
    model, tok = local
    q = make_problems(1, 3000)[0]
    events = []
    with PythonSandbox(timeout=30) as sb:
        tr = run_tools([{"role": "user", "content": MATH_INSTRUCTION + q["question"]}], model=model, tokenizer=tok,
                       greedy=True, max_new_tokens=160, max_steps=3, sandbox=sb, on_event=events.append)
    return tr, events


def test_events_rebuild_the_trace_the_run_returns(tir_run):
    tr, events = tir_run
    assert len(tr.steps) >= 2 and tr.steps[0].tool_calls, "the demo run should call its tool at least once"
    rebuilt = TraceBuilder.from_events(events)
    assert rebuilt == tr                       # every field: tokens, segments, routing, steps, timings, messages
    assert rebuilt is not tr and events[-1].trace is tr
    # the stream is what the trace is built from: leave the tool results out and the rebuilt trace differs
    assert TraceBuilder.from_events([e for e in events if not isinstance(e, ToolFinished)]) != tr


def test_events_come_in_order_and_say_what_happened(tir_run):
    tr, events = tir_run
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert events[0].prompt == tr.prompt and events[-1].stop_reason == tr.meta["tir"]["stop_reason"] == "answer"
    steps = [e for e in events if isinstance(e, StepFinished)]
    assert [e.step for e in steps] == list(range(len(tr.steps)))
    for i, s in enumerate(tr.steps):
        mine = [e for e in events if getattr(e, "step", None) == i and not isinstance(e, (RunStarted, RunFinished))]
        kinds = [type(e) for e in mine]
        # text and parsed parts while generating, then the step's output, its tools, and its end
        gen_end = kinds.index(StepGenerated)
        assert set(kinds[:gen_end]) <= {TokenDelta, Parsed} and kinds[-1] is StepFinished
        deltas = [e for e in mine[:gen_end] if isinstance(e, TokenDelta)]
        assert "".join(d.text for d in deltas) == tr.step_text(i)          # the stop token's text included
        assert [t for d in deltas for t in d.ids] == tr.token_ids[slice(*s.generated)].tolist()
        parsed = [e.event for e in mine if isinstance(e, Parsed)]
        if s.reasoning: assert "".join(p.text for p in parsed if isinstance(p, ReasoningDelta)) == s.reasoning
        assert "".join(p.text for p in parsed if isinstance(p, ContentDelta)).strip() == s.content.strip()
        assert sum(isinstance(p, ToolCallStarted) for p in parsed) == sum(isinstance(p, ToolCallFinished) for p in parsed) == len(s.tool_calls)
        starts = [e for e in mine if isinstance(e, ToolStarted)]
        done = [e for e in mine if isinstance(e, ToolFinished)]
        assert [e.name for e in starts] == [c["name"] for c in s.tool_calls] and [e.result for e in done] == s.results
        for f in done:                          # what the code printed, as it printed it, is in the tool's output
            printed = "".join(e.text for e in mine if isinstance(e, ToolOutput) and e.index == f.index)
            assert printed.strip() and printed.strip() in (f.result["output"] or "")
            assert f.response == f.result["output"]


def test_stream_events_yields_a_run_as_it_goes(local):
    model, tok = local
    it = stream_events(solve, make_problems(1, 3002)[0]["question"], model=model, tokenizer=tok, greedy=True,
                       max_new_tokens=160, max_steps=3)
    events = list(it)
    assert isinstance(events[-1], RunFinished) and it.trace.answer is not None
    assert TraceBuilder.from_events(events).token_ids.tolist() == it.trace.token_ids.tolist()


def _same_run(old: Trace, new: Trace):
    "Two traces of the same run, ignoring what differs run to run (times, creation) and how sampling was written."
    assert SamplingParams.from_dict(old.sampling) == SamplingParams.from_dict(new.sampling)
    for f in ("model", "token_ids", "tokens", "prompt", "messages", "tools", "segments", "logprobs", "entropies",
              "routing", "routing_note", "answer"):
        a, b = getattr(old, f), getattr(new, f)
        same = np.array_equal(a, b, equal_nan=True) if isinstance(a, np.ndarray) else a == b
        assert same, f"{f} differs"
    assert len(old.steps) == len(new.steps)
    for s, t in zip(old.steps, new.steps):
        strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
        assert strip(s.results) == strip(t.results)
        assert (s.prompt, s.generated, s.reasoning, s.content, s.tool_calls, s.finish_reason, s.errors, s.context_start) == \
               (t.prompt, t.generated, t.reasoning, t.content, t.tool_calls, t.finish_reason, t.errors, t.context_start)


# The recorded runs: the shipped demo model (second edition), greedy, on two held-out problems; written by
# `python tests/test_events.py --record` when the shipped model changes (then say so in the commit).
RECORDED = {"generate": DATA / "demo2_generate.trace.safetensors", "tir": DATA / "demo2_tir.trace.safetensors"}


def _runs(model, tok) -> dict:
    from cascade_lab.generate import generate
    q = make_problems(1, 3001)[0]
    gen = generate(model, tok, [{"role": "user", "content": MATH_INSTRUCTION + q["question"]}], greedy=True, max_new_tokens=120)
    p = make_problems(1, 3000)[0]
    return {"generate": gen, "tir": solve(p["question"], model=model, tokenizer=tok, greedy=True, reference=p["answer"],
                                          max_new_tokens=160)}


def test_the_same_runs_give_the_recorded_traces(local):
    "A regression test of the whole path (render, generate, parse, tools, trace): the same runs, the same traces."
    new = _runs(*local)
    _same_run(Trace.load(RECORDED["generate"]), new["generate"])
    old = Trace.load(RECORDED["tir"])
    _same_run(old, new["tir"])
    assert old.meta["grade"] == new["tir"].meta["grade"] and old.meta["problem"] == new["tir"].meta["problem"]

if __name__ == "__main__":                                  # python tests/test_events.py --record
    import sys
    from cascade_lab.model import load_model
    if sys.argv[1:] == ["--record"]:
        for name, tr in _runs(*load_model()).items(): tr.save(RECORDED[name]); print("wrote", RECORDED[name])
