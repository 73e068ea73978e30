"""Property and fuzz tests of `cascade_lab.parse`: streaming equals batch parsing for every split, the events
agree with the result, spans point at the text they claim, nothing raises, and parsed turns render back to
the text the model produced."""
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cascade_lab.chat import PYTHON_TOOL, render_chat
from cascade_lab.parse import (AssistantTurn, ContentDelta, ReasoningDelta, StreamParser, ToolCallFinished,
                               ToolCallParameter, ToolCallStarted, parse_output)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CALC = {"type": "function", "function": {"name": "calc", "parameters": {"type": "object", "properties": {
    "n": {"type": "integer"}, "x": {"type": "number"}, "ok": {"type": "boolean"}, "xs": {"type": "array"},
    "opts": {"type": "object"}, "s": {"type": "string"}, "maybe": {"type": ["integer", "null"]}}, "required": ["n"]}}}
TOOLS = [PYTHON_TOOL, CALC]

# Text made of the format's own tags (whole and cut), whitespace and ordinary characters, so the parser's
# tag handling, hold-back and error paths are all exercised.
PIECES = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<function=", "<function=calc>",
          "<function=stateful_python_code_exec>", "</function>", "<parameter=", "<parameter=n>", "<parameter=code>",
          "<parameter=xs>", "</parameter>", ">", "<", "</", "\n", "\n\n", " ", "x", "42", "[1, 2]", "True", "é",
          "print(1)", "</thi", "<tool_", "</tool_ca", "</param", "<|im_end|>",
          # name tags without their '>', and the tags that may (or may not) follow a </parameter>
          "<function=calc\n", "<parameter=n\n", "<parameter=s<", "</parameter>\n</function>\n</tool_call>",
          "</function>\n</tool_call>", "</parameter>x"]
texts = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=5)), max_size=40).map("".join)
# a well-formed call, so the interesting paths (typed values, events) are reached often
good_calls = st.builds(lambda v, n: f"<tool_call>\n<function=calc>\n<parameter=n>\n{n}\n</parameter>\n"
                                    f"<parameter=s>\n{v}\n</parameter>\n</function>\n</tool_call>\n",
                       st.text(max_size=8), st.integers(-5, 10**6))
mixed = st.lists(st.one_of(texts, good_calls), min_size=1, max_size=4).map("".join)


def split(text, cuts):
    "Cut `text` at the given (sorted, deduplicated) positions."
    pts = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0] + pts, pts + [len(text)])]


def stream(text, cuts, tools, thinking):
    sp = StreamParser(tools, thinking=thinking)
    events = []
    for chunk in split(text, cuts): events += sp.feed(chunk)
    events += sp.close()
    return sp.result, events


@SETTINGS
@given(text=mixed, cuts=st.lists(st.integers(0, 10**6), max_size=12), thinking=st.booleans(), with_tools=st.booleans())
def test_stream_equals_batch_for_every_split(text, cuts, thinking, with_tools):
    tools = TOOLS if with_tools else None
    got, events = stream(text, cuts, tools, thinking)
    assert got == parse_output(text, tools=tools, thinking=thinking)
    # one character at a time too: the most demanding split
    assert stream(text, range(len(text)), tools, thinking)[0] == got


@SETTINGS
@given(text=mixed, cuts=st.lists(st.integers(0, 10**6), max_size=12), thinking=st.booleans())
@example(text="<tool_call><function=", cuts=[], thinking=False)     # found by CI: ends before any name
def test_events_agree_with_result(text, cuts, thinking):
    r, events = stream(text, cuts, TOOLS, thinking)
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == (r.reasoning or "")
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)).strip() == r.content
    assert [e.call for e in events if isinstance(e, ToolCallFinished)] == r.tool_calls
    assert [e.index for e in events if isinstance(e, ToolCallFinished)] == list(range(len(r.tool_calls)))
    started = {e.index: e.name for e in events if isinstance(e, ToolCallStarted)}
    for i, call in enumerate(r.tool_calls):
        # announced with the name it ends with ('' when the output ended inside `<function=`, before any name)
        if call.name or started.get(i) == "": assert started.get(i) == call.name
        # a call announced by name may turn out malformed later (a parameter tag without '>'): then it has no name
        elif i in started: assert call.errors and any("kept as text" in e for e in call.errors)
        params = [(e.name, e.value) for e in events if isinstance(e, ToolCallParameter) and e.index == i]
        assert params == [(p.name, p.value) for p in call.parameters]


@SETTINGS
@given(text=mixed, thinking=st.booleans(), with_tools=st.booleans())
def test_fuzz_never_raises_and_spans_point_at_their_text(text, thinking, with_tools):
    r = parse_output(text, tools=TOOLS if with_tools else None, thinking=thinking)
    assert isinstance(r, AssistantTurn) and r.text == text
    assert not any("internal parser error" in e for e in r.errors), r.errors
    if thinking:
        assert r.reasoning is not None and text[slice(*r.reasoning_span)] == r.reasoning
    else:
        assert r.reasoning is None and r.reasoning_span is None and r.thinking_finished
    assert r.thinking_finished == (not thinking or "</think>" in text)
    last = 0
    for a, b in r.content_spans:       # ordered, disjoint, inside the text, each a piece of the content
        assert last <= a < b <= len(text) and text[a:b] in r.content
        last = b
    for c in r.tool_calls:
        assert text[slice(*c.span)] == c.raw and c.raw.startswith("<tool_call>")
        assert c.finished == c.raw.endswith("</tool_call>")
        for p in c.parameters:
            assert text[slice(*p.span)] == p.text and c.span[0] <= p.span[0] <= p.span[1] <= c.span[1]
    # the message form always renders (no unserialisable values, no nameless calls)
    render_chat([{"role": "user", "content": "q"}, r.to_message()], tools=TOOLS)


# ---- round trip: a turn in the template's own layout parses and renders back to the same text -------------
words = st.text(st.sampled_from("abc xyz\n\t.-é日=<>/*"), max_size=12)
reasonings = words.filter(lambda s: s.strip() and "</think>" not in s and not s.startswith("<think>"))
contents = words.map(str.strip).filter(lambda s: "<tool_call>" not in s and "<think>" not in s and "</think>" not in s)
# each argument with the type its schema gives it
ARG = {"n": st.integers(-10**9, 10**9), "x": st.floats(allow_nan=False, allow_infinity=False),
       "ok": st.booleans(), "xs": st.lists(st.integers() | st.text(max_size=3), max_size=3),
       "opts": st.dictionaries(st.text(max_size=3), st.integers() | st.none(), max_size=3),
       "s": words.filter(lambda s: "</parameter>" not in s and "<parameter=" not in s and "</function>" not in s),
       "maybe": st.none() | st.integers()}
calc_calls = st.fixed_dictionaries({k: v for k, v in ARG.items() if k == "n"},
                                   optional={k: v for k, v in ARG.items() if k != "n"}).map(
    lambda a: {"type": "function", "function": {"name": "calc", "arguments": a}})


@SETTINGS
@given(thinking=st.booleans(), reasoning=reasonings, content=contents, calls=st.lists(calc_calls, max_size=3),
       earlier=st.booleans())
def test_round_trip(thinking, reasoning, content, calls, earlier):
    prefix = [{"role": "user", "content": "What is 6*7?"}]
    if earlier:   # a finished earlier exchange in the history must not matter
        prefix = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}] + prefix
    msg = {"role": "assistant", "content": content}
    if thinking: msg["reasoning_content"] = reasoning
    if calls: msg["tool_calls"] = calls
    prompt = render_chat(prefix, tools=TOOLS, add_generation_prompt=True, enable_thinking=thinking)
    full = render_chat(prefix + [msg], tools=TOOLS)
    assert full.startswith(prompt) and full.endswith("<|im_end|>\n")
    generated = full[len(prompt):-len("<|im_end|>\n")]          # what the model wrote after the prompt

    turn = parse_output(generated, tools=TOOLS, thinking=thinking)
    assert turn.errors == []
    assert turn.reasoning == (reasoning if thinking else None) and turn.content == content
    assert [c.to_dict() for c in turn.tool_calls] == calls
    assert render_chat(prefix + [turn.to_message()], tools=TOOLS) == full


# ---- adversarial outputs, each by its own example --------------------------------------------------------
@pytest.mark.parametrize("text, check", [
    # reasoning re-opened with <think>, cut before any </think>
    ("<think>\nabc", lambda r: r.reasoning == "abc" and not r.thinking_finished),
    # a tag cut in the middle at the end of the output stays text
    ("abc</thi", lambda r: r.reasoning == "abc</thi" and not r.thinking_finished),
    ("r</think>a<tool_ca", lambda r: r.content == "a<tool_ca" and not r.tool_calls),
    # a call that never names its function keeps its raw text and says so
    ("</think><tool_call>oops</tool_call>", lambda r: r.tool_calls[0].name == "" and "oops" in r.to_message()["content"]),
    # a parameter without </parameter> ends at the end of the call (</function></tool_call>), reported
    ("</think><tool_call>\n<function=calc>\n<parameter=n>\n1\n</function>\n</tool_call>",
     lambda r: r.tool_calls[0].arguments == {"n": 1} and any("no </parameter>" in e for e in r.errors)),
    # ... and a <parameter= inside a value is part of the value: no parameter is invented from it
    ("</think><tool_call>\n<function=calc>\n<parameter=n>\n1\n<parameter=s>\nx\n</parameter>\n</function>\n</tool_call>",
     lambda r: r.tool_calls[0].arguments == {"n": "1\n<parameter=s>\nx"} and any("calc.n: expected integer" in e for e in r.errors)),
    # a name tag without its '>' (the name ends at the line end or '<'): the call stays text, the next is read
    ("</think><tool_call>\n<function=calc\n<parameter=n>\n1\n</parameter>\n</function>\n</tool_call>"
     "<tool_call>\n<function=calc>\n<parameter=n>\n2\n</parameter>\n</function>\n</tool_call>",
     lambda r: [(c.name, c.arguments) for c in r.tool_calls] == [("", {}), ("calc", {"n": 2})]
     and "<function=calc\n<parameter=n>" in r.to_message()["content"]),
    # cut inside a parameter name, inside a function name
    ("</think><tool_call>\n<function=calc>\n<parameter=n", lambda r: r.tool_calls[0].name == "calc" and not r.tool_calls[0].finished),
    ("</think><tool_call>\n<function=ca", lambda r: r.tool_calls[0].name == "ca" and r.errors),
    # text after a call is kept (as content) and reported
    ("</think><tool_call>\n<function=calc>\n<parameter=n>\n1\n</parameter>\n</function>\n</tool_call>\nand more",
     lambda r: r.content == "and more" and any("text after a tool call" in e for e in r.errors)),
    # a tool call inside the reasoning is reasoning, not a call
    ("<tool_call>\n<function=calc>\n</function>\n</tool_call></think>done", lambda r: not r.tool_calls and r.content == "done"),
    # two calls in one turn; missing required parameter reported
    ("</think>\n<tool_call>\n<function=calc>\n<parameter=n>\n1\n</parameter>\n</function>\n</tool_call>\n"
     "<tool_call>\n<function=calc>\n</function>\n</tool_call>\n",
     lambda r: len(r.tool_calls) == 2 and any("missing required" in e for e in r.errors)),
    # invalid UTF-8 surrogates and control characters are just text
    ("\udcff\x00</think>\x07", lambda r: r.reasoning == "\udcff\x00" and r.content == "\x07"),
])
def test_adversarial_outputs(text, check):
    r = parse_output(text, tools=TOOLS)
    assert check(r), r
    assert stream(text, range(len(text)), TOOLS, True)[0] == r


def test_bad_arguments_are_programming_errors():
    with pytest.raises(ValueError, match="takes the generated text"): parse_output(b"bytes")
    sp = StreamParser()
    with pytest.raises(ValueError, match="takes text"): sp.feed(None)
    sp.close()
    with pytest.raises(ValueError, match="closed"): sp.feed("more")
    with pytest.raises(ValueError, match="tool 0"): parse_output("x", tools=[{"description": "no name"}])


def test_long_stream_is_linear_enough():
    # a 200k-character reasoning fed token by token must not rescan the whole buffer per token:
    # count the characters the parser looks at via the held-back tail, which must stay tiny
    sp = StreamParser()
    for _ in range(50_000): sp.feed("abc ")
    assert len(sp.text) - sp._pos <= len("\n</think>")
    sp.feed("\n</think>\nok")
    sp.close()
    assert sp.result.content == "ok" and len(sp.result.reasoning) == 200_000
