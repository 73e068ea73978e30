"""Byte-for-byte parity of `render_chat` with the official Nemotron-3-Nano chat template (which Cascade-2 keeps).

The official template is the oracle, an optional one: it is never copied into this repository, and
`reference_oracle.find_reference` (tests/reference_oracle.py) finds it, in a reference folder or in the local
Hugging Face cache, or says why not, and then the parity tests skip with that reason. We render it with
transformers' own `render_jinja_template`, exactly as `apply_chat_template` would, and demand identical strings:
a one-byte difference in the prompt is a different experiment (the format's rules: nbs/00_chat.ipynb).
The error-contract tests at the end need no template and always run.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade_lab.chat import PYTHON_TOOL, render_chat

from reference_oracle import find_reference

REFERENCE = find_reference("chat_template")   # the official template, or why it is not at hand
TEMPLATE = REFERENCE.text

# Applied to every test that needs the oracle; the error-contract tests don't, so they stay unmarked.
needs_template = pytest.mark.skipif(TEMPLATE is None, reason=REFERENCE.reason)

# every combination of the three keyword options (all cheap: a render takes about a millisecond)
OPTION_SETS = [dict(add_generation_prompt=g, enable_thinking=t, truncate_history_thinking=h)
               for g, t, h in itertools.product([False, True], repeat=3)]
OPTION_IDS = ["-".join(["gen" if o["add_generation_prompt"] else "nogen",
                        "think" if o["enable_thinking"] else "instruct",
                        "trunc" if o["truncate_history_thinking"] else "full"]) for o in OPTION_SETS]


def oracle(messages, tools=None, *, add_generation_prompt=False, enable_thinking=True,
           truncate_history_thinking=True) -> str:
    "The official template's output, after dropping None-valued keys as `apply_chat_template` does."
    from transformers.utils.chat_template_utils import render_jinja_template
    msgs = [{k: v for k, v in m.items() if v is not None} for m in messages]
    rendered, _ = render_jinja_template(
        conversations=[msgs], tools=tools, chat_template=TEMPLATE, add_generation_prompt=add_generation_prompt,
        enable_thinking=enable_thinking, truncate_history_thinking=truncate_history_thinking)
    return rendered[0]


# ---------------------------------------------------------------------------------------------------
# Hand-written tools: every part of the format's rule 2 (the tools section; nbs/00_chat.ipynb).

WEATHER = {  # the common OpenAI shape
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
BARE = {  # no OpenAI wrapper, description with surrounding whitespace at both levels
    "name": "search",
    "description": "  \n Search the web.\n\n  ",
    "parameters": {"type": "object",
                   "properties": {"query": {"type": "string", "description": "\t the query \n"}}},
}
TYPE_LIST = {  # a parameter whose type is a list, rendered with Python's str()
    "name": "maybe",
    "parameters": {"type": "object", "properties": {"x": {"type": ["string", "null"]}}},
}
UNICODE_ENUM = {  # ensure_ascii=False matters inside <enum> and <required>
    "type": "function",
    "function": {
        "name": "pick",
        "description": "Choisir un élément 日本",
        "parameters": {
            "type": "object",
            "properties": {"choice": {"type": "string", "description": "café ☕",
                                      "enum": ["é", "日本", "🙂", "<think>", 'q"uote', 1, None, True]},
                           "ünï": {"type": "integer"}},
            "required": ["choice", "ünï"],
        },
    },
}
EXTRA_KEYS = {  # extra keys of every kind at the parameter, parameters and function level
    "name": "extras",
    "description": "All the extras.",
    "parameters": {
        "type": "object",
        "properties": {
            "a": {"type": "number", "name": "ignored: name is a handled key", "minimum": 0, "maximum": 1.5,
                  "default": None, "nullable": True, "format": "float", "examples": [0.5, "é"],
                  "items": {"type": "integer", "note": "日本"}, "empty_list": [], "empty_dict": {}},
            "b": {"description": "no type at all", "pattern": "^[a-z]+$"},
        },
        "additionalProperties": False,
        "title": "Extras ✓",
        "minProperties": 1,
        "$defs": {"thing": {"type": "string"}},
        "nothing": None,
        "tags": ["x", 2, None],
        "required": ["a"],
    },
    "strict": True,
    "version": 2,
    "ratio": 0.25,
    "owner": "ïnternal",
    "deprecated": None,
    "aliases": ["ext", "🙂"],
    "meta": {"k": [1, {"z": None}]},
}
NO_PROPERTIES = {"name": "ping", "description": "No arguments.", "parameters": {"type": "object"}}
NO_PARAMETERS = {"name": "noop"}  # the template copes with a tool without `parameters`
NON_DICT_PROPERTY = {"name": "odd", "parameters": {"type": "object", "properties": {"p": "string"}}}
ALL_TOOLS = [WEATHER, BARE, TYPE_LIST, UNICODE_ENUM, EXTRA_KEYS, NO_PROPERTIES, NO_PARAMETERS, NON_DICT_PROPERTY]


# ---------------------------------------------------------------------------------------------------
# Hand-written conversations: every part of the format's rules 1 and 3-5 (nbs/00_chat.ipynb).

def U(c): return {"role": "user", "content": c}
def A(c=None, **kw): return {"role": "assistant", "content": c, **kw}
def S(c): return {"role": "system", "content": c}
def T(c): return {"role": "tool", "content": c}
def call(name, args, wrapped=True):
    return ({"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}} if wrapped
            else {"name": name, "arguments": args})

ALL_TYPES_ARGS = {"s": "line 1\nline 2\n", "empty": "", "i": 42, "neg": -7, "f": 1.5, "small": 1e-7, "big": 1e16,
                  "t": True, "fl": False, "n": None, "l": [1, "two", None, [3.0]], "strs": ["a", "b"],
                  "d": {"nested": {"k": [True, None]}, "é": "日本"}, "empty_d": {}, "empty_l": []}

CASES = {
    # system block (rule 1) and tools section (rule 2)
    "user-only": ([U("Hello")], None),
    "system-user": ([S("You are helpful."), U("Hi")], None),
    "empty-system-no-tools": ([S(""), U("Hi")], None),
    "empty-system-tools": ([S(""), U("Hi")], [WEATHER]),
    "system-tools": ([S("Be brief."), U("Weather?")], [WEATHER]),
    "no-system-tools": ([U("Weather?")], [WEATHER, BARE]),
    "system-only": ([S("Just a system prompt.")], None),
    "system-only-tools": ([S("sys")], [BARE]),
    "system-in-middle": ([U("a"), S("mid-conversation instruction"), U("b")], None),
    "two-systems": ([S("first"), S("second"), U("q")], [BARE]),
    "empty-tools-list": ([S("sys"), U("q")], []),
    "all-tools": ([S("Use tools."), U("go")], ALL_TOOLS),
    "tool-type-list": ([U("q")], [TYPE_LIST]),
    "tool-unicode-enum": ([U("q")], [UNICODE_ENUM]),
    "tool-extra-keys": ([U("q")], [EXTRA_KEYS]),
    "tool-no-properties": ([U("q")], [NO_PROPERTIES]),
    "tool-no-parameters": ([U("q")], [NO_PARAMETERS]),
    "tool-non-dict-property": ([U("q")], [NON_DICT_PROPERTY]),
    "python-tool": ([S("Solve it."), U("2+2?")], [PYTHON_TOOL]),
    # assistant content and think tags (rule 4)
    "assistant-plain": ([U("q"), A("answer")], None),
    "assistant-reasoning": ([U("q"), A("answer", reasoning_content="let me think")], None),
    "assistant-reasoning-multiline": ([U("q"), A(" answer \n", reasoning_content="\n step 1\nstep 2 \n")], None),
    "assistant-reasoning-whitespace": ([U("q"), A("answer", reasoning_content=" \n\t ")], None),
    "assistant-reasoning-empty": ([U("q"), A("answer", reasoning_content="")], None),
    "assistant-reasoning-no-content": ([U("q"), A(None, reasoning_content="thinking only")], None),
    "assistant-reasoning-and-tags": ([U("q"), A("<think>inner</think>ans", reasoning_content="outer")], None),
    "assistant-both-tags": ([U("q"), A("<think>r</think>answer")], None),
    "assistant-only-open": ([U("q"), A("<think>partial thought")], None),
    "assistant-only-close": ([U("q"), A("reasoning</think> answer")], None),
    "assistant-open-mid": ([U("q"), A("prefix <think> unfinished")], None),
    "assistant-several-tags": ([U("q"), A("<think>a</think>b<think>c</think> d ")], None),
    "assistant-close-before-open": ([U("q"), A("x</think>y<think>z")], None),
    "assistant-empty": ([U("q"), A("")], None),
    "assistant-none": ([U("q"), A(None)], None),
    "assistant-whitespace": ([U("q"), A("  \n ")], None),
    "assistant-missing-content": ([U("q"), {"role": "assistant"}], None),
    "assistant-thinking-alias": ([U("q"), A("ans", thinking="via the `thinking` key")], None),
    "assistant-reasoning-alias": ([U("q"), A("ans", reasoning="via the `reasoning` key")], None),
    "assistant-none-keys": ([U("q"), A("ans", reasoning_content=None, tool_calls=None)], None),
    "assistant-empty-tool-calls": ([U("q"), A("ans", tool_calls=[])], None),
    # history truncation: assistants before the last user are hidden (rule 4, `hide`)
    "history-several-users": ([S("sys"), U("q1"), A("a1", reasoning_content="r1"), U("q2"),
                               A("<think>r2</think>a2"), U("q3"), A("a3", reasoning_content="r3")], None),
    "history-hidden-forms": ([U("q1"), A("<think>only open"), A("close only</think> tail"), A("<think>x</think>"),
                              A(""), A(None, reasoning_content="r"), A("plain"), A("  "), U("q2")], None),
    "history-hidden-several-tags": ([U("q1"), A("<think>a</think>b<think>c</think> d "), U("q2")], None),
    "history-last-is-assistant": ([U("q1"), A("a1", reasoning_content="r1"), A("a2", reasoning_content="r2")], None),
    "no-user-at-all": ([S("sys"), A("a", reasoning_content="r"), A("<think>x</think>y")], None),
    # tool calls (rule 4, with tool_calls)
    "call-all-arg-types-wrapped": ([U("q"), A(None, tool_calls=[call("f", ALL_TYPES_ARGS)])], [BARE]),
    "call-all-arg-types-bare": ([U("q"), A(None, tool_calls=[call("f", ALL_TYPES_ARGS, wrapped=False)])], None),
    "call-with-content": ([U("q"), A("Let me check.", tool_calls=[call("get_weather", {"city": "Paris"})])],
                          [WEATHER]),
    "call-with-reasoning": ([U("q"), A("I'll look.", reasoning_content="need weather",
                                       tool_calls=[call("get_weather", {"city": "Paris"})])], [WEATHER]),
    "call-no-arguments": ([U("q"), A("", tool_calls=[{"type": "function", "function": {"name": "ping"}}])], None),
    "call-empty-arguments": ([U("q"), A(None, tool_calls=[call("ping", {})])], None),
    "calls-several": ([U("q"), A("two calls", tool_calls=[call("a", {"x": 1}), call("b", {"y": "z"}, False),
                                                           call("c", {})])], None),
    "call-unicode-args": ([U("q"), A(None, tool_calls=[call("pick", {"choice": "日本 é 🙂",
                                                                      "obj": {"clé": ["é", "🙂"]}})])],
                          [UNICODE_ENUM]),
    "call-args-with-tags": ([U("q"), A(None, tool_calls=[call("f", {"code": "print('</parameter>')\n<think>",
                                                                    "d": {"t": "</think>"}})])], None),
    "call-hidden-with-content": ([U("q1"), A("Checking.", reasoning_content="r",
                                             tool_calls=[call("f", {"a": 1})]), T("ok"), U("q2")], None),
    "call-hidden-only-open": ([U("q1"), A("before <think> after", tool_calls=[call("f", {})]), T("r"), U("q2")],
                              None),
    "call-hidden-several-tags": ([U("q1"), A("<think>a</think>b <think>c</think> d", tool_calls=[call("f", {})]),
                                  T("r"), U("q2")], None),
    "call-hidden-no-content": ([U("q1"), A(None, tool_calls=[call("f", {"a": [1]})]), T("r"), U("q2")], None),
    "call-hidden-think-only": ([U("q1"), A("<think>all hidden</think>", tool_calls=[call("f", {})]), T("r"),
                                U("q2")], None),
    # tool results (rule 4, role tool)
    "tool-one": ([U("q"), A(None, tool_calls=[call("f", {})]), T("result"), A("done")], [BARE]),
    "tool-several": ([U("q"), A(None, tool_calls=[call("f", {}), call("g", {})]), T("r1"), T("r2\n"), T(" r3 "),
                      A("done")], None),
    "tool-first-in-loop": ([T("orphan result"), U("q")], None),
    "tool-first-after-system": ([S("sys"), T("orphan"), T("orphan 2"), U("q")], None),
    "tool-last": ([U("q"), A(None, tool_calls=[call("f", {})]), T("last result")], None),
    "tool-none-content": ([U("q"), A(None, tool_calls=[call("f", {})]), T(None)], None),
    "tool-then-user": ([U("q"), A(None, tool_calls=[call("f", {})]), T("r"), U("thanks"), A("ok")], None),
    "tool-between-tools-runs": ([U("q"), T("a"), T("b"), A("x"), T("c"), U("d"), T("e")], None),
    "tool-loop-python": ([S("Solve."), U("Compute 2**10"),
                          A(None, reasoning_content="use python",
                            tool_calls=[call("stateful_python_code_exec", {"code": "print(2**10)\n"})]),
                          T("1024"), A("It is 1024.", reasoning_content="done"), U("and 2**11?")], [PYTHON_TOOL]),
    # text: unicode, special tags in user/system text, None contents, other roles
    "unicode-text": ([S("Système 日本 🙂"), U("Ça va ? 日本語 🎉"), A("Très bien 🙂", reasoning_content="réflexion")],
                     [UNICODE_ENUM]),
    "tags-in-user-text": ([U("<|im_end|>\n<|im_start|>assistant\n<think></think><tool_call>"), A("x")], None),
    "user-none-content": ([U(None)], None),
    "user-missing-content": ([{"role": "user"}, A("x")], None),
    "user-whitespace": ([U("  padded \n")], None),
    "developer-role": ([S("sys"), {"role": "developer", "content": "dev note"}, U("q")], None),
    "other-roles": ([{"role": "ipython", "content": "out 日本"}, {"role": "critic", "content": " <think> "},
                     U("q")], None),
    "other-role-first": ([{"role": "developer", "content": "first"}, U("q")], [WEATHER]),
}


def _case_params(cases):
    return [pytest.param(msgs, tools, id=name) for name, (msgs, tools) in cases.items()]


@needs_template
@pytest.mark.parametrize("opts", OPTION_SETS, ids=OPTION_IDS)
@pytest.mark.parametrize("messages,tools", _case_params(CASES))
def test_hand_written_parity(messages, tools, opts):
    assert render_chat(messages, tools, **opts) == oracle(messages, tools, **opts)


@needs_template
def test_render_chat_does_not_mutate_inputs():
    # the oracle and render_chat must see the same inputs, so neither may edit the caller's dicts
    msgs, tools = CASES["tool-loop-python"]
    before = json.dumps([msgs, tools], sort_keys=True)
    render_chat(msgs, tools)
    assert json.dumps([msgs, tools], sort_keys=True) == before


# ---------------------------------------------------------------------------------------------------
# Tool-call arguments as a JSON string (OpenAI wire style) must render like the dict form.

def _stringify_args(messages, *, ensure_ascii=False):
    "A copy of `messages` with every tool call's dict `arguments` turned into a JSON string."
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if calls:
            new_calls = []
            for c in calls:
                fn = c.get("function", c)
                if "arguments" in fn:
                    fn = {**fn, "arguments": json.dumps(fn["arguments"], ensure_ascii=ensure_ascii)}
                new_calls.append({**c, "function": fn} if "function" in c else fn)
            m = {**m, "tool_calls": new_calls}
        out.append(m)
    return out

def _has_arguments(messages):
    return any("arguments" in c.get("function", c) for m in messages for c in m.get("tool_calls") or [])

CALL_CASES = {k: v for k, v in CASES.items() if _has_arguments(v[0])}


@needs_template
@pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8", "ascii-escaped"])
@pytest.mark.parametrize("messages,tools", _case_params(CALL_CASES))
def test_string_arguments_match_dict_form(messages, tools, ensure_ascii):
    wire = _stringify_args(messages, ensure_ascii=ensure_ascii)
    assert wire != messages  # we really changed something
    for opts in OPTION_SETS:
        assert render_chat(wire, tools, **opts) == oracle(messages, tools, **opts), opts


@needs_template
@pytest.mark.parametrize("blank", ["", "  ", "{}"])
def test_blank_string_arguments_are_no_arguments(blank):
    wire = [U("q"), A(None, tool_calls=[call("ping", blank)])]
    assert render_chat(wire) == oracle([U("q"), A(None, tool_calls=[call("ping", {})])])


# ---------------------------------------------------------------------------------------------------
# Python functions as tools render like their transformers JSON schema.

def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius", days: int | None = None) -> str:
    """Get the weather forecast for a city.

    Args:
        city: The city name, e.g. "Zürich" or "東京".
        unit: The temperature unit.
        days: How many days ahead to forecast.
    """
    return ""


def summarize(texts: list[str], weights: dict[str, float], style: str = "short", verbose: bool = False,
              ratio: float = 0.5) -> str:
    """
    Summarize several texts.

    Args:
        texts: The texts to summarize.
        weights: A weight per text id.
        style: The summary style. (choices: ["short", "long", "très long"])
        verbose: Whether to explain the summary.
        ratio: Target length as a fraction of the input.

    Returns:
        The summary.
    """
    return ""


def no_args() -> str:
    """Return the current time."""
    return ""


@needs_template
@pytest.mark.parametrize("opts", [OPTION_SETS[0], OPTION_SETS[-1]], ids=[OPTION_IDS[0], OPTION_IDS[-1]])
@pytest.mark.parametrize("funcs", [[get_weather], [summarize], [no_args], [get_weather, summarize, no_args]],
                         ids=["weather", "summarize", "no-args", "all"])
def test_python_function_tools(funcs, opts):
    from transformers.utils import get_json_schema
    msgs = [S("Use tools."), U("Weather in Zürich?"),
            A("Checking.", tool_calls=[call("get_weather", {"city": "Zürich", "days": 2})]), T("sunny")]
    schemas = [get_json_schema(f) for f in funcs]
    expected = oracle(msgs, schemas, **opts)
    assert render_chat(msgs, funcs, **opts) == expected
    # a mix of functions and schema dicts is fine too
    assert render_chat(msgs, [funcs[0], *schemas[1:]], **opts) == expected


# ---------------------------------------------------------------------------------------------------
# A real (tiny) tokenizer carrying the template: render_chat == apply_chat_template(tokenize=False).

@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    specials = ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    vocab = {t: i for i, t in enumerate(["[UNK]", *specials, "user", "assistant", "system", "tool"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    tok.chat_template = TEMPLATE
    return tok

TOKENIZER_CASES = ["system-tools", "assistant-none-keys", "assistant-thinking-alias", "history-several-users",
                   "call-with-reasoning", "tool-loop-python", "tool-none-content", "user-none-content",
                   "unicode-text", "all-tools", "call-all-arg-types-wrapped"]


@needs_template
@pytest.mark.parametrize("opts", OPTION_SETS, ids=OPTION_IDS)
@pytest.mark.parametrize("messages,tools", _case_params({k: CASES[k] for k in TOKENIZER_CASES}))
def test_tokenizer_apply_chat_template(tokenizer, messages, tools, opts):
    if not messages: pytest.skip("apply_chat_template refuses an empty conversation")
    expected = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **opts)
    assert render_chat(messages, tools, **opts) == expected


# ---------------------------------------------------------------------------------------------------
# Random conversations (hypothesis), restricted to inputs the official template can render.

# Text is built from fragments so the format's own tags (and whitespace around them) turn up often.
FRAGMENTS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<|im_end|>", "<|im_start|>", "\n", " ", "\t",
             "a", "b", "Z", "0", "é", "日本", "🙂", "{", '"', "</", "\u00a0"]
text = st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join), st.text(max_size=6))
name = st.text(alphabet="abcxyz_019éß", min_size=1, max_size=6)  # word chars only, never a handled key
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                        st.floats(allow_nan=False, allow_infinity=False), text)
json_value = st.recursive(json_scalar, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(text, c, max_size=3)),
                          max_leaves=6)
extras = st.dictionaries(name, json_value, max_size=2)


@st.composite
def tools_strategy(draw):
    fn = {"name": draw(name)}
    if draw(st.booleans()): fn["description"] = draw(text)
    if draw(st.integers(0, 4)):  # mostly with parameters, sometimes without
        params = {"type": "object"}
        if draw(st.integers(0, 4)):
            props = {}
            for pname in draw(st.lists(name, max_size=3, unique=True)):
                p = {}
                if draw(st.booleans()): p["type"] = draw(st.sampled_from(["string", "integer", "number", "boolean",
                                                                          "array", "object", ["string", "null"]]))
                if draw(st.booleans()): p["description"] = draw(text)
                if draw(st.booleans()): p["enum"] = draw(st.lists(json_scalar, max_size=3))
                p.update(draw(extras))
                props[pname] = p
            params["properties"] = props
        params.update(draw(extras))
        if draw(st.booleans()): params["required"] = draw(st.lists(name, max_size=2))
        fn["parameters"] = params
    fn.update(draw(extras))
    return {"type": "function", "function": fn} if draw(st.booleans()) else fn


@st.composite
def tool_call_strategy(draw):
    fn = {"name": draw(name), "arguments": draw(st.dictionaries(name, json_value, max_size=3))}
    return {"type": "function", "function": fn} if draw(st.booleans()) else fn


def _msg(role, content): return {"role": role, "content": content}

message = st.one_of(
    st.builds(_msg, st.just("user"), st.one_of(text, st.none())),
    st.builds(_msg, st.just("system"), text),
    st.builds(_msg, st.just("tool"), st.one_of(text, st.none())),
    st.builds(_msg, st.sampled_from(["developer", "ipython", "critic"]), text),
    st.builds(lambda c, r, calls: {"role": "assistant", "content": c, "reasoning_content": r, "tool_calls": calls},
              st.one_of(text, st.none()), st.one_of(st.none(), text),
              st.one_of(st.none(), st.lists(tool_call_strategy(), max_size=3))),
)


@needs_template
# PARITY_EXAMPLES raises the count for a longer hunt (e.g. PARITY_EXAMPLES=20000); 1000 keeps the file fast.
@settings(max_examples=int(os.environ.get("PARITY_EXAMPLES", 1000)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=st.lists(message, min_size=1, max_size=7),
       tools=st.one_of(st.none(), st.lists(tools_strategy(), max_size=3)),
       add_generation_prompt=st.booleans(), enable_thinking=st.booleans(), truncate_history_thinking=st.booleans(),
       wire_args=st.booleans())
def test_random_conversations_parity(messages, tools, add_generation_prompt, enable_thinking,
                                     truncate_history_thinking, wire_args):
    # the official template needs a string system prompt: an index-0 system message always has text here
    opts = dict(add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking,
                truncate_history_thinking=truncate_history_thinking)
    expected = oracle(messages, tools, **opts)
    # sometimes give render_chat the OpenAI wire form of the arguments (a JSON string): same prompt expected
    given_msgs = _stringify_args(messages) if wire_args else messages
    assert render_chat(given_msgs, tools, **opts) == expected


# ---------------------------------------------------------------------------------------------------
# The error contract: a ValueError naming the message/tool index and the problem (no template needed).

GOOD = [U("q"), A("a")]
TOOL = {"name": "f", "parameters": {"type": "object", "properties": {}}}

ERROR_CASES = [
    pytest.param("hello", None, r"messages must be a list.*str", id="messages-str"),
    pytest.param({"role": "user", "content": "q"}, None, r"messages must be a list.*dict", id="messages-dict"),
    pytest.param([U("q"), "not a dict"], None, r"message 1\b.*expected a dict", id="message-not-dict"),
    pytest.param([U("q"), A("a"), {"content": "no role"}], None, r"message 2\b.*'role'", id="message-no-role"),
    pytest.param([U("q"), A(None, tool_calls=[call("f", {"s": {1, 2}})])], None,
                 r"message 1\b.*tool call 0.*'s'.*not JSON-serialisable", id="arg-set"),
    pytest.param([S("s"), U("q"), A(None, tool_calls=[call("f", {}), call("g", {"o": object()})])], None,
                 r"message 2\b.*tool call 1.*'o'.*not JSON-serialisable", id="arg-object"),
    pytest.param([U("q"), A(None, tool_calls=[call("f", '{"a": 1')])], None,
                 r"message 1\b.*tool call 0.*not valid JSON", id="args-invalid-json-string"),
    pytest.param(GOOD, [TOOL, {"description": "nameless", "parameters": {}}], r"tool 1\b.*no name",
                 id="tool-dict-without-name"),
    pytest.param(GOOD, [TOOL, TOOL, {"type": "function", "function": {"description": "x"}}], r"tool 2\b.*no name",
                 id="tool-wrapper-without-name"),
    pytest.param(GOOD, TOOL, r"tools must be a list.*dict", id="tools-dict"),
    pytest.param(GOOD, "f", r"tools must be a list.*str", id="tools-str"),
]


@pytest.mark.parametrize("messages,tools,pattern", ERROR_CASES)
def test_error_contract(messages, tools, pattern):
    with pytest.raises(ValueError, match=pattern):
        render_chat(messages, tools)


def test_error_contract_message_is_readable():
    # the message says where (index) and what (the bad value's type) in plain words
    with pytest.raises(ValueError) as e:
        render_chat([U("q"), A(None, tool_calls=[call("f", {"s": {1}})])])
    assert re.search(r"message 1, tool call 0 \('f'\): argument 's' is not JSON-serialisable", str(e.value))
