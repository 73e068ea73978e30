"""JupyterLab in a real browser: the harness of tests/browser.py proven on a minimal anywidget, then the quickstart
tutorial (nbs/tutorials/quickstart.ipynb) run in Lab with each of its widgets checked on screen.

Each test prints its timings (`pytest -s`): Lab's start, opening the notebook, run-all to the first widget showing,
run-all to the end. Screenshots go to tests/artifacts/ (look at them)."""
import importlib.util
import time
from pathlib import Path

import pytest

from browser import chromium, lab_page, lab_server, notebook  # noqa: F401 (pytest fixtures)

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "nbs" / "tutorials" / "quickstart.ipynb"

# A complete anywidget: its front end is an inline ES module that draws on a canvas and says when it is done;
# a change of `n` from Python redraws it (the comm works both ways).
DOT_WIDGET = '''import anywidget, traitlets

class Dot(anywidget.AnyWidget):
    _esm = """export default { render({ model, el }) {
      const c = document.createElement("canvas"); c.width = 160; c.height = 60; el.appendChild(c);
      const draw = () => { const g = c.getContext("2d"); g.clearRect(0, 0, 160, 60);
        g.fillStyle = "#d62728"; g.fillRect(10, 10, model.get("n"), 40); el.dataset.ready = "1"; };
      model.on("change:n", draw); draw(); } }"""
    n = traitlets.Int(40).tag(sync=True)

dot = Dot()
dot'''


def _timings(label: str, **secs):
    print(f"\n[timing] {label}: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in secs.items()))


def test_minimal_anywidget_renders_offline(lab_server, lab_page):
    name = lab_server.add_notebook(notebook(DOT_WIDGET, "dot.n = 140"), "dot.ipynb")
    opened = lab_page.open(name)
    lab_page.run_all()
    first = lab_page.wait_widgets(1, timeout=60)
    done = lab_page.wait_done(timeout=60)
    out = lab_page.cell_output("class Dot")
    assert lab_page.widget_outputs(within=out).count() == 1, "the widget cell shows no widget view"
    # `dot.n = 140` (the second cell) must reach the front end: the bar is redrawn 140 x 40 px
    deadline, canvases = time.monotonic() + 10, lab_page.canvas_ink(out)
    while canvases and canvases[0]["ink"] != 140 * 40 and time.monotonic() < deadline:
        time.sleep(0.1)
        canvases = lab_page.canvas_ink(out)
    assert len(canvases) == 1 and not canvases[0]["error"], canvases
    assert canvases[0]["ink"] == 140 * 40, f"the bar is not 140 x 40 px after `dot.n = 140`: {canvases}"
    lab_page.screenshot("dot", out)
    lab_page.screenshot("page")
    _timings("minimal anywidget", lab_start=lab_server.start_s, open_notebook=opened, run_all_to_widget=first,
             run_all_to_done=done)
    assert not [m for m in lab_page.console if "anywidget" in m.lower()], lab_page.console
    # the recorder itself: a request off loopback is caught (and aborted); then forgotten, so that this test passes
    lab_page.page.evaluate("() => fetch('http://192.0.2.1/probe').catch(() => null)")
    assert [r for r in lab_page.off_loopback if "192.0.2.1" in r], f"the off-loopback recorder missed a request: {lab_page.off_loopback}"
    lab_page.off_loopback[:] = [r for r in lab_page.off_loopback if "192.0.2.1" not in r]


def _widgets_missing() -> str | None:
    missing = [m for m in ("cascade_lab.explorer", "cascade_lab.stepper") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not importable yet (the widget modules have not landed)" if missing else None


@pytest.mark.skipif(bool(_widgets_missing()), reason=_widgets_missing() or "")
def test_quickstart_widgets_render(lab_server, lab_page):
    name = lab_server.add_notebook(QUICKSTART)
    opened = lab_page.open(name)
    lab_page.run_all()
    first = lab_page.wait_widgets(1, timeout=120)
    done = lab_page.wait_done(timeout=180)
    # the three widgets, then `trace.show()`: the three in tabs (only the open tab is drawn)
    for label, source in [("routing_explorer", "RoutingExplorer(trace)"), ("thinking_viewer", "ThinkingViewer(trace)"),
                          ("tir_stepper_live", "TIRStepper.live("), ("trace_show_tabs", "trace.show()")]:
        out = lab_page.cell_output(source)
        widget = lab_page.widget_outputs(within=out)
        assert widget.count() >= 1, f"the cell {source!r} shows no widget output"
        widget.first.scroll_into_view_if_needed()
        lab_page.page.wait_for_function(
            "el => el.querySelector('[data-ready=\"1\"]') || el.querySelector('canvas')", arg=widget.first.element_handle(),
            timeout=30_000)
        canvases = lab_page.canvas_ink(widget.first)
        ready = widget.first.evaluate("el => !!el.querySelector('[data-ready=\"1\"]')")
        lab_page.screenshot(label, out)
        assert any(c["ink"] > 0 for c in canvases), f"{label}: no canvas with ink ({canvases}; data-ready: {ready})"
    lab_page.screenshot("page")
    if lab_page.console: print("\n[browser] console:\n" + "\n".join(lab_page.console))
    _timings("quickstart", lab_start=lab_server.start_s, open_notebook=opened, run_all_to_first_widget=first,
             run_all_to_done=done)
