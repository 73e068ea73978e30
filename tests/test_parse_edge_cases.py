"""Edge cases of `cascade_lab.parse` (issue 11, part 1), each checked three ways: `parse_output`, a `StreamParser`
fed at every chunk size from 1 to the length of the text, and the round trip through `to_message()` and
`render_chat`.

1. a `<function=NAME` or `<parameter=NAME` tag without its `>`: the name ends at the line end or at `<`, the call
   is kept as text with an error, and later calls are unaffected;
2. `anyOf` / `oneOf` / `nullable` schemas type the values (the first type, in `TYPE_ORDER`, the text parses as);
3. values that contain the format's own tags: a `</parameter>` ends a value only when what follows it (after
   white space) is `<parameter=`, `</function>`, `</tool_call>` or the end of the text.
"""
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cascade_lab.chat import render_chat
from cascade_lab.parse import (StreamParser, ToolCallFinished, ToolCallParameter, ToolCallStarted, TYPE_ORDER,
                               convert_value, parse_output, schema_types)

IM_END = "<|im_end|>\n"
PREFIX = [{"role": "user", "content": "Do it."}]

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}
WRITE = {"type": "function", "function": {"name": "write_file", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"]}}}
# what Pydantic writes for Optional[int], Optional[list[str]], Union[int, str], plus oneOf, nesting and nullable
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {
    "query": {"type": "string"},
    "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
    "tags": {"anyOf": [{"items": {"type": "string"}, "type": "array"}, {"type": "null"}], "default": None},
    "key": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "filter": {"oneOf": [{"type": "object"}, {"anyOf": [{"type": "array"}, {"type": "null"}]}]},
    "ratio": {"type": "number", "nullable": True},
    "exact": {"oneOf": [{"type": "boolean"}, {"$ref": "#/$defs/Mode"}]}}, "required": ["query"]}}}
TOOLS = [WEATHER, WRITE, SEARCH]


def call(name, **params):
    "A call in the template's own layout."
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>\n"


def stream(text, size, tools=TOOLS, thinking=True):
    sp = StreamParser(tools, thinking=thinking)
    events = []
    for i in range(0, len(text), size): events += sp.feed(text[i:i + size])
    events += sp.close()
    return sp.result, events


def parse_everywhere(text, tools=TOOLS, thinking=True):
    "`parse_output(text)`, checked equal to a StreamParser fed at every chunk size, with events that agree."
    want = parse_output(text, tools=tools, thinking=thinking)
    for size in range(1, len(text) + 1):
        got, events = stream(text, size, tools, thinking)
        assert got == want, f"chunk size {size}"
        assert [e.call for e in events if isinstance(e, ToolCallFinished)] == want.tool_calls
        for i, c in enumerate(want.tool_calls):
            params = [(e.name, e.value) for e in events if isinstance(e, ToolCallParameter) and e.index == i]
            assert params == [(p.name, p.value) for p in c.parameters], f"chunk size {size}"
            started = [e.name for e in events if isinstance(e, ToolCallStarted) and e.index == i]
            assert started in ([c.name], []) or (c.name == "" and c.errors), f"chunk size {size}"
    assert not any("internal parser error" in e for e in want.errors)
    return want


def round_trip(generated, tools=TOOLS, thinking=True):
    """Render `to_message()` back after the prompt; return the text the message renders to (what a model would
    have written). The message of that text is the same message: a malformed call stays text, at the same place."""
    msg = parse_output(generated, tools=tools, thinking=thinking).to_message()
    assert all(c["function"]["name"] for c in msg.get("tool_calls", []))
    prompt = render_chat(PREFIX, tools=tools, add_generation_prompt=True, enable_thinking=thinking)
    full = render_chat(PREFIX + [msg], tools=tools)
    assert full.startswith(prompt) and full.endswith(IM_END)
    again = full[len(prompt):-len(IM_END)]
    assert parse_output(again, tools=tools, thinking=thinking).to_message() == msg
    return again


def errors_of(turn, i): return [e for e in turn.errors if e.startswith(f"tool call {i}:")]


# ---- 1. a name tag without its '>' ---------------------------------------------------------------------
GOOD = call("get_weather", city="Paris", days=3)


def test_function_tag_without_gt_keeps_the_next_line():
    bad = "<tool_call>\n<function=bad\n</function>\n</tool_call>\n"
    text = "Checking.\n</think>\n" + bad + GOOD
    r = parse_everywhere(text)
    c0, c1 = r.tool_calls
    assert c0.name == "" and c0.raw == bad.strip() and c0.arguments == {}
    assert any("'bad' ends at the line end" in e and "kept as text" in e for e in errors_of(r, 0))
    assert (c1.name, c1.arguments, errors_of(r, 1)) == ("get_weather", {"city": "Paris", "days": 3}, [])
    msg = r.to_message()
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["get_weather"]
    assert msg["content"] == bad.strip()
    assert round_trip(text) == text                     # the malformed call comes first: the very same text


def test_function_tag_without_gt_does_not_lose_the_parameter():
    bad = "<tool_call>\n<function=get_weather\n<parameter=city>Dallas</parameter>\n</function>\n</tool_call>\n"
    text = "R.\n</think>\n" + bad + GOOD
    r = parse_everywhere(text)
    assert [c.name for c in r.tool_calls] == ["", "get_weather"]
    assert "Dallas" in r.tool_calls[0].raw and "Dallas" in r.to_message()["content"]
    assert r.tool_calls[1].arguments == {"city": "Paris", "days": 3} and not errors_of(r, 1)
    assert round_trip(text) == text


@pytest.mark.parametrize("bad, why", [
    ("<function=get_weather<parameter=city>\nDallas\n</parameter>\n</function>", "'get_weather' ends at '<'"),
    ("<function=get_weather>\n<parameter=city\nDallas\n</parameter>\n</function>", "'city' ends at the line end"),
    ("<function=get_weather>\n<parameter=city<b>\nDallas\n</parameter>\n</function>", "'city' ends at '<'"),
    ("<function=get_weather>\n<parameter=days>\n3\n</parameter>\n<parameter=city\nDallas</parameter>\n</function>",
     "'city' ends at the line end"),
    ("<function=get_weather\r\n<parameter=city>\nDallas\n</parameter>\n</function>", "ends at the line end"),
])
def test_malformed_name_tags_keep_the_call_as_text(bad, why):
    bad = f"<tool_call>\n{bad}\n</tool_call>\n"
    text = "R.\n</think>\n" + GOOD + bad + GOOD
    r = parse_everywhere(text)
    assert [c.name for c in r.tool_calls] == ["get_weather", "", "get_weather"]
    assert r.tool_calls[1].raw == bad.strip() and any(why in e for e in errors_of(r, 1)), r.errors
    assert errors_of(r, 0) == errors_of(r, 2) == []     # the calls around it are unaffected
    msg = r.to_message()
    assert len(msg["tool_calls"]) == 2 and "Dallas" in msg["content"]
    round_trip(text)


def test_malformed_call_events():
    # no ToolCallStarted for a call whose function tag has no '>'; the finished call says what happened
    text = "R.\n</think><tool_call>\n<function=bad\n<parameter=a>\n1\n</parameter>\n</function>\n</tool_call>"
    for size in range(1, len(text) + 1):
        _, events = stream(text, size)
        assert not any(isinstance(e, (ToolCallStarted, ToolCallParameter)) for e in events)
        (fin,) = [e for e in events if isinstance(e, ToolCallFinished)]
        assert fin.call.name == "" and fin.call.errors


def test_truncated_name_is_a_cut_not_a_malformed_tag():
    # the text ending inside the name (a generation cut off) keeps the name, as before
    for text in ["R.\n</think><tool_call>\n<function=get_wea", "R.\n</think><tool_call>\n<function=get_weather>\n<parameter=ci"]:
        r = parse_everywhere(text)
        assert r.tool_calls[0].name.startswith("get_wea") and not r.tool_calls[0].finished
        round_trip(text)


def test_instruct_mode_malformed_first():
    text = "<tool_call>\n<function=x\n</tool_call>\n" + GOOD
    r = parse_everywhere(text, thinking=False)
    assert [c.name for c in r.tool_calls] == ["", "get_weather"]
    assert round_trip(text, thinking=False) == text


# ---- 2. anyOf / oneOf / nullable ------------------------------------------------------------------------
PROPS = SEARCH["function"]["parameters"]["properties"]


@pytest.mark.parametrize("pname, text, value", [
    ("limit", "42", 42), ("limit", "null", None), ("limit", "None", None),
    ("tags", '["a", "b"]', ["a", "b"]), ("tags", "['a']", ["a"]), ("tags", "null", None),
    ("key", "7", 7), ("key", "k-7", "k-7"), ("key", "007", "007"), ("key", "2.5", "2.5"),
    ("filter", '{"a": 1}', {"a": 1}), ("filter", "[1]", [1]), ("filter", "null", None),
    ("ratio", "0.5", 0.5), ("ratio", "3", 3), ("ratio", "null", None),
    ("exact", "true", True), ("exact", "fuzzy", "fuzzy"),     # a $ref alternative allows any text
])
def test_alternatives_type_the_value(pname, text, value):
    got, why = convert_value(text, PROPS[pname])
    assert (got, why) == (value, None) and type(got) is type(value)


def test_no_alternative_fits():
    v, why = convert_value("many", PROPS["limit"])
    assert v == "many" and why.startswith("expected null or integer")
    v, why = convert_value("{oops", PROPS["filter"])
    assert v == "{oops" and "null or object or array" in why


def test_schema_types_order():
    assert schema_types(PROPS["limit"]) == ["null", "integer"]
    assert schema_types(PROPS["filter"]) == ["null", "object", "array"]       # nested oneOf/anyOf flattened
    assert schema_types({"type": ["string", "null", "int"]}) == ["null", "integer", "string"]
    assert schema_types({"anyOf": [{"type": "string"}, {"type": "number"}]}) == ["number", "string"]
    assert schema_types({"type": "integer", "nullable": True}) == ["null", "integer"]
    assert schema_types({"nullable": True}) == ["null", "string"]             # no type: any text
    assert schema_types({}) == schema_types(None) == schema_types({"$ref": "#/$defs/X"}) == ["string"]
    assert list(TYPE_ORDER) == ["null", "boolean", "integer", "number", "object", "array", "string"]


def test_pydantic_schema():
    pydantic = pytest.importorskip("pydantic")
    from typing import Optional, Union
    M = pydantic.create_model("M", limit=(Optional[int], None), tags=(Optional[list[str]], None), key=(Union[int, str], 0))
    props = M.model_json_schema()["properties"]
    assert convert_value("42", props["limit"]) == (42, None) and convert_value("null", props["limit"]) == (None, None)
    assert convert_value('["x"]', props["tags"]) == (["x"], None)
    assert convert_value("abc", props["key"]) == ("abc", None) and convert_value("5", props["key"]) == (5, None)


def test_alternatives_in_a_call():
    args = {"query": "cats", "limit": 42, "tags": ["a", "b"], "key": "k1", "filter": {"x": [1, None]},
            "ratio": None, "exact": True}
    msg = {"role": "assistant", "content": "", "reasoning_content": "Search.",
           "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": args}}]}
    prompt = render_chat(PREFIX, tools=TOOLS, add_generation_prompt=True)
    text = render_chat(PREFIX + [msg], tools=TOOLS)[len(prompt):-len(IM_END)]
    r = parse_everywhere(text)
    assert r.errors == [] and r.tool_calls[0].arguments == args
    assert type(r.tool_calls[0].arguments["limit"]) is int
    assert round_trip(text) == text
    # a typing failure is reported; the text is kept
    r = parse_everywhere("R.\n</think>" + call("search", query="q", limit="lots"))
    assert r.tool_calls[0].arguments["limit"] == "lots" and any("search.limit: expected null or integer" in e for e in r.errors)


# ---- 3. values that contain the format's tags -----------------------------------------------------------
CLOSE_THEN_NEXT = re.compile(r"</parameter>\s*(<parameter=|</function>|</tool_call>)|</function>\s*</tool_call>")


@pytest.mark.parametrize("content", [
    "a</parameter>b",
    "end tag: </parameter>\nnot a tag after it",
    "</tool_call>",
    "<tool_call>\n<function=evil>\n",
    "x = '<parameter=evil>'\ny = 1",
    "<parameter=evil>\nboom\n",
    "</function>\nstill the file",
    "line</parameter>",
    "</parameter> </parameter>x",
    "<|im_end|>\n</think>",
])
def test_value_with_literal_tags(content):
    text = "I will write it.\n</think>\n" + call("write_file", path="a.txt", content=content) + GOOD
    r = parse_everywhere(text)
    assert r.errors == [], r.errors
    w, g = r.tool_calls
    assert w.arguments == {"path": "a.txt", "content": content}          # no parameter invented, nothing lost
    assert [p.name for p in w.parameters] == ["path", "content"]
    assert g.arguments == {"city": "Paris", "days": 3}
    assert round_trip(text) == text


def test_the_one_ambiguous_sequence():
    # '</parameter>' then (white space and) a tag that may follow a value does end the value: the documented limit
    content = "a</parameter>\n<parameter=b>\nc"
    text = "R.\n</think>" + call("write_file", path="p", content=content)
    r = parse_everywhere(text)
    assert r.tool_calls[0].arguments == {"path": "p", "content": "a", "b": "c"}
    assert any("'b' is not in the schema" in e for e in r.errors)


def test_missing_close_is_recovered_without_inventing():
    # no </parameter> at all: the value ends at </function> (as before), reported
    text = "R.\n</think>" + "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>\n" + GOOD
    r = parse_everywhere(text)
    assert r.tool_calls[0].arguments == {"city": "Paris"} and any("no </parameter>" in e for e in r.errors)
    assert r.tool_calls[1].arguments == {"city": "Paris", "days": 3}
    round_trip(text)
    # a later </parameter> that closes: what lies between is the value, no parameter is made of it
    text = "R.\n</think><tool_call>\n<function=get_weather>\n<parameter=days>\n1\n<parameter=city>\nx\n</parameter>\n</function>\n</tool_call>"
    r = parse_everywhere(text)
    assert [p.name for p in r.tool_calls[0].parameters] == ["days"]
    assert r.tool_calls[0].arguments == {"days": "1\n<parameter=city>\nx"}
    assert any("get_weather.days: expected integer" in e for e in r.errors)
    round_trip(text)


def test_truncated_inside_a_value_with_tags():
    for text in ["R.\n</think><tool_call>\n<function=write_file>\n<parameter=content>\nx</parameter>\n</fun",
                 "R.\n</think><tool_call>\n<function=write_file>\n<parameter=content>\nx</parameter>y",
                 "R.\n</think><tool_call>\n<function=write_file>\n<parameter=content>\nx</parameter>\n"]:
        r = parse_everywhere(text)
        assert not r.tool_calls[0].finished and r.tool_calls[0].name == "write_file"
        round_trip(text)


def test_stream_holds_the_value_until_it_can_decide():
    text = "R.\n</think>" + call("write_file", content="x</parameter>\n y") + "done"
    first_close = text.index("</parameter>") + len("</parameter>")
    sp = StreamParser(TOOLS)
    assert not any(isinstance(e, ToolCallParameter) for e in sp.feed(text[:first_close + 2]))   # '\n ' may lead to a tag
    assert not any(isinstance(e, ToolCallParameter) for e in sp.feed(text[first_close + 2:first_close + 3]))
    second_close = text.index("</parameter>", first_close) + len("</parameter>")
    assert not any(isinstance(e, ToolCallParameter) for e in sp.feed(text[first_close + 3:second_close + 1 + 5]))
    ev = sp.feed(text[second_close + 6:second_close + 1 + len("</function>")])  # now '</function>' is whole
    assert ev == [ToolCallParameter(0, "content", "x</parameter>\n y")]
    sp.feed(text[second_close + 1 + len("</function>"):])
    sp.close()
    assert sp.result.content == "done"


# a value in the template's layout round-trips exactly unless it holds '</parameter>' followed by a next tag
tag_bits = st.sampled_from(["</parameter>", "<parameter=", "<parameter=k>", "</function>", "</tool_call>", "<tool_call>",
                            "<function=", ">", "<", "\n", " ", "x", "é", "R.\n</think>", "<|im_end|>"])
values = st.lists(tag_bits | st.text(max_size=3), max_size=12).map("".join).filter(
    lambda v: not CLOSE_THEN_NEXT.search(v))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v=values, cuts=st.lists(st.integers(0, 400), max_size=8), thinking=st.booleans())
def test_any_value_round_trips(v, cuts, thinking):
    msg = {"role": "assistant", "content": "Writing.", "tool_calls": [
        {"type": "function", "function": {"name": "write_file", "arguments": {"content": v, "path": "p"}}}]}
    if thinking: msg["reasoning_content"] = "ok"
    prompt = render_chat(PREFIX, tools=TOOLS, add_generation_prompt=True, enable_thinking=thinking)
    text = render_chat(PREFIX + [msg], tools=TOOLS)[len(prompt):-len(IM_END)]
    r = parse_output(text, tools=TOOLS, thinking=thinking)
    assert r.errors == [] and [c.to_dict() for c in r.tool_calls] == msg["tool_calls"]
    sp = StreamParser(TOOLS, thinking=thinking)
    pts = sorted({c % (len(text) + 1) for c in cuts})
    for a, b in zip([0] + pts, pts + [len(text)]): sp.feed(text[a:b])
    sp.close()
    assert sp.result == r
    assert round_trip(text, thinking=thinking) == text
