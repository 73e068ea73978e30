"""The remote backend for real: `transformers serve` runs the shipped demo model on loopback (started and
stopped here), and `generate_remote` must give what a local `generate` gives, streamed, as a `Trace`."""
import os

import pytest

from cascade_lab.chat import PYTHON_TOOL
from cascade_lab.demo import DEMO_DIR, TIR_INSTRUCTION, make_problems
from cascade_lab.remote import RemoteError, RemoteModel, generate_remote

from conftest import free_port as _free_port


@pytest.fixture(scope="module")
def local():
    from cascade_lab.model import load_model
    return load_model()


def test_remote_equals_local_greedy(server, local):
    model, tok = local
    from cascade_lab.generate import generate
    q = make_problems(1, seed=3000)[0]["question"]
    msgs = [{"role": "user", "content": TIR_INSTRUCTION + q}]
    want = generate(model, tok, msgs, tools=[PYTHON_TOOL], greedy=True, max_new_tokens=150)
    deltas = []
    got = generate_remote(RemoteModel(server, tok), msgs, tools=[PYTHON_TOOL], greedy=True, max_new_tokens=150,
                          stream=deltas.append)
    assert len(deltas) > 5 and "".join(deltas).startswith(got.text[:20])      # it really streamed
    assert got.prompt == want.prompt
    local_text = want.text[:-len("<|im_end|>")] if want.text.endswith("<|im_end|>") else want.text
    assert got.text == local_text
    s_got, s_want = got.steps[0], want.steps[0]
    assert (s_got.reasoning, s_got.content, s_got.tool_calls) == (s_want.reasoning, s_want.content, s_want.tool_calls)
    assert s_got.tool_calls and s_got.tool_calls[0]["name"] == "stateful_python_code_exec"
    assert got.model.kind == "remote" and got.routing is None and "did not return routed experts" in got.routing_note


def test_remote_trace_saves_and_loads(server, local, tmp_path):
    from cascade_lab.trace import Trace
    t = generate_remote(RemoteModel(server, local[1]), [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"}],
                        enable_thinking=False, greedy=True, max_new_tokens=40)
    t.save(tmp_path / "r.trace")
    assert Trace.load(tmp_path / "r.trace") == t


def test_unreachable_server_is_a_clear_error(local):
    with pytest.raises(RemoteError, match="cannot reach .* is the server running"):
        generate_remote(RemoteModel(f"http://127.0.0.1:{_free_port()}", local[1], model="m", timeout=5),
                        [{"role": "user", "content": "hi"}], max_new_tokens=4)


def test_server_refusal_is_reported_with_its_reason(server, local):
    # transformers serve refuses fields it does not know: the server's own words reach the user
    with pytest.raises(RemoteError, match="HTTP 422.*skip_special_tokens"):
        generate_remote(RemoteModel(server, local[1], extra_body={"skip_special_tokens": False}),
                        [{"role": "user", "content": "hi"}], max_new_tokens=4)
