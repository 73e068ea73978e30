"""`generate` on the demo model: bad options are refused with a clear message before any work, and a trace of a
real run saves, loads and keeps its parts consistent."""
import numpy as np
import pytest

from cascade_lab.chat import PYTHON_TOOL
from cascade_lab.demo import TIR_INSTRUCTION, make_problems
from cascade_lab.generate import generate, stream_generate


@pytest.fixture(scope="module")
def demo():
    from cascade_lab.model import load_model
    return load_model()


MSGS = [{"role": "user", "content": TIR_INSTRUCTION + make_problems(1, seed=3002)[0]["question"]}]


@pytest.mark.parametrize("kwargs, needle", [
    (dict(temperature=0.0), "temperature must be > 0 when sampling"),
    (dict(top_p=0.0), "top_p must be in (0, 1]"),
    (dict(top_p=1.5), "top_p must be in (0, 1]"),
    (dict(thinking_budget=-1), "thinking_budget must be >= 0"),
])
def test_bad_options_are_refused(demo, kwargs, needle):
    with pytest.raises(ValueError) as e:
        generate(*demo, MSGS, max_new_tokens=4, **kwargs)
    assert needle in str(e.value)


def test_streaming_a_batch_is_refused(demo):
    with pytest.raises(ValueError, match="streaming works for one conversation at a time"):
        generate(*demo, [MSGS, MSGS], max_new_tokens=4, stream=print)
    with pytest.raises(ValueError, match="streaming works for one conversation at a time"):
        generate(*demo, [MSGS, MSGS], max_new_tokens=4, on_event=print)


def test_bad_messages_are_refused_by_the_renderer(demo):
    with pytest.raises(ValueError, match="message 0: missing 'role'"):
        generate(*demo, [{"content": "hi"}], max_new_tokens=4)


def test_stream_generate_passes_errors_to_the_consumer(demo):
    it = stream_generate(*demo, MSGS, max_new_tokens=4, top_p=2.0)
    with pytest.raises(ValueError, match="top_p"):
        list(it)


def test_a_real_trace_is_consistent_and_round_trips(demo, tmp_path):
    from cascade_lab.trace import Trace
    t = generate(*demo, MSGS, tools=[PYTHON_TOOL], greedy=True, max_new_tokens=120)
    P = t.num_prompt_tokens
    assert "".join(t.tokens[:P]) == t.prompt and t.model.kind == "demo"
    assert np.isnan(t.logprobs[:P]).all() and (t.logprobs[P:] <= 0).all() and (t.entropies[P:] >= 0).all()
    kinds = [s.kind for s in t.segments]
    assert kinds[0] == "prompt" and "reasoning" in kinds and "tool_call" in kinds
    # the routing of every token that went through the model: experts are valid and distinct per layer
    r = t.routing
    rec = r.recorded_mask()
    assert rec.sum() == len(t) - 1
    ex = r.experts[rec]
    assert (ex < t.model.num_experts).all() and all(len(set(row)) == t.model.top_k for row in ex.reshape(-1, t.model.top_k))
    assert np.allclose(r.weights[rec].astype(np.float32).sum(-1), 2.5, atol=2e-2)     # renormalised x 2.5
    t.save(tmp_path / "run.trace")
    assert Trace.load(tmp_path / "run.trace") == t
