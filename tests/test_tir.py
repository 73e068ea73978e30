"""The tool loop end to end with the demo model: the acceptance figure on fresh problems through the sandbox,
the same loop against a real OpenAI-compatible server, and the stitching of steps into one trace."""
import random
import time

import numpy as np
import pytest

from cascade_lab.chat import MATH_INSTRUCTION, render_chat
from cascade_lab.demo import SEEDS, TrainSettings, make_conversations, make_problem
from cascade_lab.demo_eval import solve_demo
from cascade_lab.sandbox import PythonSandbox
from cascade_lab.record import RunFinished, RunStarted, StepFinished, StepGenerated, StepOutput, TraceBuilder
from cascade_lab.tir import run_tools, solve

FRESH_SEED = 9100          # not a seed the demo model was trained or evaluated on
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def local():
    from cascade_lab.model import load_model
    return load_model()


def test_fresh_problems_end_to_end_through_the_sandbox(local):
    assert FRESH_SEED not in SEEDS.values()
    model, tok = local
    # fresh: none of them is a question of the demo model's training conversations
    seen = {m["content"].split("\n\n")[-1] for c in make_conversations(TrainSettings().conversations, SEEDS["train"])
            for m in c.messages if m["role"] == "user"}
    rng, problems = random.Random(FRESH_SEED), []
    while len(problems) < 50:
        p = make_problem(rng)
        if p.question not in seen and p.question not in {q.question for q in problems}: problems.append(p)
    correct, steps, t0 = 0, [], time.perf_counter()
    with PythonSandbox(timeout=30) as sb:
        for p in problems:
            sb.reset()
            tr = solve(p.question, model=model, tokenizer=tok, greedy=True, max_steps=3, max_new_tokens=160,
                       reference=p.answer, sandbox=sb)
            correct += tr.meta["grade"]["correct"]
            steps.append(len(tr.steps))
            assert tr.steps[0].results and "sandbox" in tr.meta["tir"]
    seconds = time.perf_counter() - t0
    print(f"\nsolve on 50 fresh problems (seed {FRESH_SEED}, greedy, sandbox): {correct}/50 = {correct / 50:.0%} correct; "
          f"mean steps {np.mean(steps):.2f}; {seconds:.1f} s")
    assert correct >= 40


def test_remote_loop_equals_local_loop(server, local):
    from cascade_lab.remote import RemoteModel
    model, tok = local
    remote = RemoteModel(server, tok)
    for seed in (FRESH_SEED + 1, FRESH_SEED + 2):
        p = make_problem(random.Random(seed))
        with PythonSandbox(timeout=30) as sb:
            here = solve(p.question, model=model, tokenizer=tok, greedy=True, max_steps=3, max_new_tokens=160,
                         reference=p.answer, sandbox=sb)
            sb.reset()
            there = solve(p.question, model=remote, greedy=True, max_steps=3, max_new_tokens=160, reference=p.answer, sandbox=sb)
        assert there.model.kind == "remote" and there.answer == here.answer and there.meta["grade"] == here.meta["grade"]
        assert len(there.steps) == len(here.steps) >= 2
        for a, b in zip(there.steps, here.steps):
            assert (a.reasoning, a.content, a.tool_calls) == (b.reasoning, b.content, b.tool_calls)
            assert [r["output"] for r in a.results] == [r["output"] for r in b.results]
        assert there.messages == here.messages
        assert there.routing is None and "routed experts" in there.routing_note


def test_remote_refuses_local_only_options(server, local):
    from cascade_lab.remote import RemoteModel
    with pytest.raises(ValueError, match="record_routing are not supported with a remote model"):
        run_tools([{"role": "user", "content": "hi"}], model=RemoteModel(server, local[1]), record_routing=True)


def test_sampled_run_is_reproducible_with_a_seed(local):
    model, tok = local
    p = make_problem(random.Random(FRESH_SEED + 3))
    with PythonSandbox(timeout=30) as sb:
        a = solve(p.question, model=model, tokenizer=tok, seed=11, max_steps=3, max_new_tokens=160, sandbox=sb)
        sb.reset()
        b = solve(p.question, model=model, tokenizer=tok, seed=11, max_steps=3, max_new_tokens=160, sandbox=sb)
    assert np.array_equal(a.token_ids, b.token_ids) and a.sampling["seed"] == 11


def test_solve_demo_makes_and_closes_its_own_sandbox(local):
    import psutil
    model, tok = local
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    tr = solve_demo(model, tok, make_problem(random.Random(FRESH_SEED + 4)).question)
    assert tr.steps[0].results[0]["error"] is None
    time.sleep(0.3)
    after = {c.pid for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE}
    assert after <= before


class _Rows:
    "Routing rows as a generator hands them over: arrays over the step's input + output, the last row unrecorded."
    def __init__(self, n):
        self.experts = np.arange(n * 2).reshape(n, 1, 2) % 8
        self.weights = self.scores = np.ones((n, 1, 2), np.float32)
        self.logits, self.recorded = None, np.arange(n) < n - 1


def _out(builder, prompt_ids, ids, text, end="<|im_end|>"):
    skip = builder.known_prefix(prompt_ids)
    return StepOutput(list(prompt_ids), ["t"] * (len(prompt_ids) - skip), list(ids), ["t"] * len(ids), text, "stop", end,
                      skip, np.zeros(len(ids)), np.zeros(len(ids)), _Rows(len(prompt_ids) + len(ids)))


def test_builder_continues_or_starts_a_fresh_context():
    from cascade_lab.parse import parse_output
    from cascade_lab.trace import ModelInfo
    b = TraceBuilder()
    b.feed(RunStarted(ModelInfo("t", "demo", "h", 2, [1], 8, 2), "p", [], None, {}))
    turn = parse_output("x</think>y", thinking=True)
    for i, (prompt, ids, text) in enumerate([([5, 6, 7], [8, 9], "x</think>y"),
                                             ([5, 6, 7, 8, 9, 20, 21], [22], "z"),      # extends: only the new tokens
                                             ([5, 6, 30], [31], "w")]):                 # history changed: a fresh context
        b.feed(StepGenerated(i, _out(b, prompt, ids, text), turn))
        b.feed(StepFinished(i, "stop", {}))
    assert [(s.prompt, s.generated, s.context_start) for s in b.steps] == [((0, 3), (3, 5), 0), ((5, 7), (7, 8), 0),
                                                                          ((8, 11), (11, 12), 8)]
    assert b.ids == [5, 6, 7, 8, 9, 20, 21, 22, 5, 6, 30, 31]
    assert [s.kind for s in b.segments if s.start in (5, 8)] == ["tool_response", "prompt"]
    r = b.feed(RunFinished(2, "answer", [], {}, {})).routing
    assert len(r) == 12 and r.recorded.tolist() == [1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1, 0]
    # step 2's rows are its own rows 5.. (the tokens new in it), not its first rows
    assert r.experts[5].tolist() == [[(5 * 2) % 8, (5 * 2 + 1) % 8]]


# --- bad inputs and odd tools -------------------------------------------------------------------------------
from cascade_lab.parse import parse_output
from cascade_lab.tir import call_tool, function_tool, resolve_tools


def _call(name, tools=(), **args):
    "A call as the loop gets it: parsed with the tools' schemas (which type the arguments)."
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in args.items())
    return parse_output(f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>",
                        tools=[t.schema for t in tools] or None, thinking=False).tool_calls[0]


@pytest.mark.parametrize("messages", ["hello", [("user", "x")], {"role": "user"}, None, [{"content": "no role"}]])
def test_bad_messages_are_refused_clearly(local, messages):
    with pytest.raises(ValueError, match="messages must be a list of message dicts"):
        run_tools(messages, model=local[0], tokenizer=local[1], tools=[])


@pytest.mark.parametrize("stop", [True, "yes", 3])
def test_bad_stop_is_refused(local, stop):
    with pytest.raises(ValueError, match="stop must be a threading.Event or a function"):
        run_tools([{"role": "user", "content": "hi"}], model=local[0], tokenizer=local[1], tools=[], stop=stop)


def test_odd_tool_values():
    import functools
    with pytest.raises(ValueError, match="tools must be a list of tools"): resolve_tools(5)
    with pytest.raises(ValueError, match="tools must be a list of tools"): resolve_tools(b"python")
    with pytest.raises(ValueError, match="cannot read the signature"): function_tool(max)
    async def fetch(url: str): return url
    with pytest.raises(ValueError, match="is async"): function_tool(fetch)
    def power(base: int, exp: int = 2): return base ** exp
    t = function_tool(functools.partial(power, exp=3), name="cube")
    assert t.name == "cube" and t.parameters["required"] == ["base"]
    assert call_tool(_call("cube", [t], base=2), [t])[0] == "8"
    def later(x: "NotDefinedAnywhere"): return x                  # noqa: F821 - an unresolvable annotation
    assert function_tool(later).parameters["properties"] == {"x": {}}


def test_function_results_are_cut_and_made_text():
    def big() -> str: return "y" * 5000
    def weird(): return {"a": {1, 2}, "s": "bad \ud800"}
    def quits(): raise SystemExit(3)
    tools = resolve_tools([big, weird, quits])
    text, rec = call_tool(_call("big"), tools)
    assert text == "y" * 1000 + "<output cut>" and rec["truncated"] is True
    text, _ = call_tool(_call("big"), tools, max_output_chars=10)
    assert text == "y" * 10 + "<output cut>"
    text, rec = call_tool(_call("weird"), tools)
    text.encode("utf-8")
    assert "bad ?" in text and rec["error"] is None
    text, rec = call_tool(_call("quits"), tools)
    assert text == "Error: SystemExit: 3" and rec["error"] == "SystemExit: 3"


def test_schemas_without_properties_or_with_additional_properties():
    from cascade_lab.tir import Tool
    anything = Tool({"type": "function", "function": {"name": "anything"}}, lambda **kw: sorted(kw))
    assert call_tool(_call("anything", a=1, b=2), [anything])[0] == '["a", "b"]'
    open_ = Tool({"type": "function", "function": {"name": "open_", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True}}}, lambda **kw: len(kw))
    assert call_tool(_call("open_", [open_], a=1, z="q"), [open_])[0] == "2"


def test_a_broken_sandbox_is_an_error_response_not_a_crash():
    sb = PythonSandbox()
    sb.close()                                    # every run now raises SandboxError
    text, rec = call_tool(_call("stateful_python_code_exec", code="print(1)"), resolve_tools(["python"]), sandbox=sb)
    assert text.startswith("Error: the Python tool is unavailable") and rec["error"].startswith("sandbox failed: SandboxError")


def test_stop_interrupts_a_running_tool_call():
    import threading
    from cascade_lab.tir import _interrupt_when
    ev = threading.Event()
    with PythonSandbox(timeout=30) as sb:
        sb.run("kept = 1")
        threading.Timer(0.5, ev.set).start()
        t = time.perf_counter()
        with _interrupt_when(ev, sb):
            r = sb.run("import time; time.sleep(20)")
        assert r.error == "KeyboardInterrupt" and time.perf_counter() - t < 5 and not r.restarted
        assert sb.run("print(kept)").output == "1"            # the session itself goes on
