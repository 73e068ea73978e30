"""The CompareView in a real JupyterLab (tests/browser.py: a Lab server on loopback, Debian chromium, no request off
loopback): a notebook builds two pairs of traces and shows their CompareViews, a pair with a known divergence (a
made-up run and a copy routed otherwise in MoE layer 3 from token 500, with another text from token 1500) and the
two demo runs saved with the tests (`Trace.compare`). The test checks that both views draw (data-ready, ink on
their canvases), that a hover in the browser reaches the kernel's widget (`view.hover`, read back by running a
probe cell appended to the notebook until the synced value arrives: comm messages come when they come), and that a
window set in the kernel moves the view.

Screenshots go to tests/artifacts/test_lab_compare-*.png."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from browser import chromium, lab_page, lab_server, notebook  # noqa: F401 (pytest fixtures)

REPO = Path(__file__).resolve().parents[1]
DEMOS = ("demo_generate_0.0.1.trace.safetensors", "demo_tir_0.0.1.trace.safetensors")

NB = notebook(
    "import copy\nfrom cascade_lab.compare import CompareView\nfrom cascade_lab.trace import Trace, synthetic_trace\n"
    "a = synthetic_trace(2000)\nb = copy.deepcopy(a)\n"
    "b.routing.experts[500:, 3] = (b.routing.experts[500:, 3].astype(int) + 1) % 128\n"
    "b.token_ids[1500:] += 1\nb.tokens[1500:] = [s.upper() for s in b.tokens[1500:]]",
    "view = CompareView(a, b, labels=('thinking', 'instruct'))\nview",
    f"gen, tir = Trace.load({DEMOS[0]!r}), Trace.load({DEMOS[1]!r})\ndemo_view = gen.compare(tir)\ndemo_view")

# the view's state and geometry, read from the element (compare_view.js keeps it there for tests)
_JS_VIEW = """el => { const v = el.querySelector('.cl-cv').__compareView, g = v.geo, r = v.ui.main.getBoundingClientRect();
  return {left: r.left, top: r.top, plotW: g.plotW, aTop: g.aTop, bTop: g.bTop, rowH: g.rowH, start: v.st.start, end: v.st.end,
          T: v.d.T, P: v.d.P, fd: v.d.info.first_divergence}; }"""
_JS_RUN_PROBE = """async ([index, source]) => {
  const app = window.jupyterapp, nb = app.shell.currentWidget.content, cells = nb.model.sharedModel;
  if (index === null) { cells.insertCell(cells.cells.length, {cell_type: 'code', source}); index = cells.cells.length - 1; }
  else cells.cells[index].setSource(source);
  nb.activeCellIndex = index; nb.deselectAll();
  await app.commands.execute('notebook:run-cell');
  return index;
}"""
_JS_PROBE_OUT = """(i) => {
  const panel = window.jupyterapp.shell.currentWidget, c = panel.content.widgets[i], k = panel.sessionContext.session.kernel;
  if (c.model.executionCount === null || c.node.querySelector('.jp-InputPrompt').textContent.includes('*') || k.status !== 'idle') return null;
  let text = '';
  for (let j = 0; j < c.model.outputs.length; j++) {
    const o = c.model.outputs.get(j).toJSON();
    if (o.output_type === 'stream') text += Array.isArray(o.text) ? o.text.join('') : o.text;
    if (o.output_type === 'error') text += `ERROR ${o.ename}: ${o.evalue}`;
  }
  return text;
}"""


class Probe:
    "Reads a Python expression's JSON value in the notebook's kernel by running one appended cell, again and again."

    def __init__(self, lp):
        self.lp, self.index, self.runs = lp, None, 0

    def value(self, expr: str, want=None, timeout: float = 20):
        "The value of `expr`; with `want`, run again until it equals `want` (fails after `timeout` s)."
        deadline = time.monotonic() + timeout
        while True:
            self.runs += 1
            mark = f"@@probe{self.runs}@@"                     # a fresh mark: never an earlier run's output
            self.index = self.lp.page.evaluate(_JS_RUN_PROBE, [self.index, f"import json\nprint({mark!r}, json.dumps({expr}))"])
            handle = self.lp.page.wait_for_function(_JS_PROBE_OUT, arg=self.index, timeout=60_000, polling=50)
            text = handle.json_value()
            if "ERROR" in text: self.lp._fail(f"the probe of {expr} raised: {text}")
            line = next((ln for ln in text.splitlines() if ln.startswith(mark)), None)
            if line is None: self.lp._fail(f"the probe of {expr} printed no value: {text!r}")
            value = json.loads(line[len(mark):])
            if want is None or value == want: return value
            if time.monotonic() > deadline: self.lp._fail(f"the kernel's {expr} stayed {value!r}, not {want!r}, for {timeout:.0f} s")
            time.sleep(0.1)


def _point_near(geo: dict, t: int, grid: str, row: int) -> tuple[int, int, int]:
    """Integer page coordinates (mouse events carry whole pixels) of the pixel nearest token `t`'s position in MoE
    layer row `row` of grid 'a' or 'b', and the token there: zoomed out a pixel covers several tokens, and the view
    maps x to token floor(start + (x - left - 60) / plotW * (end - start))."""
    span = geo["end"] - geo["start"]
    x = round(geo["left"] + 60 + (t + 0.5 - geo["start"]) / span * geo["plotW"])
    token = int(geo["start"] + (x - geo["left"] - 60) / geo["plotW"] * span)
    return x, int(geo["top"] + geo[f"{grid}Top"] + (row + 0.5) * geo["rowH"]), token


def test_compare_view_in_lab(lab_server, lab_page):
    lp = lab_page
    for f in DEMOS: shutil.copy(REPO / "tests" / "data" / f, lab_server.root / f)
    lab_server.add_notebook(NB, "compare.ipynb")
    opened = lp.open("compare.ipynb")
    lp.run_all()
    shown = lp.wait_widgets(2, timeout=120)
    done = lp.wait_done(timeout=120)
    print(f"\n[timing] CompareView in Lab: open {opened:.1f} s, run-all to both views drawn {shown:.1f} s, to done {done:.1f} s")
    outs = [lp.widget_outputs(within=lp.cell_output(src)) for src in ("CompareView(a, b", "gen.compare(tir)")]
    for w in outs:
        assert w.count() == 1
        assert w.first.locator('.cl-cv[data-ready="1"]').count() == 1
        inks = lp.canvas_ink(w.first)
        assert len(inks) == 3 and all(c["ink"] > 0 for c in inks), inks       # main, text strip, per-layer panel
    w = outs[0].first
    w.evaluate("e => e.scrollIntoView({block: 'center'})")
    geo = w.evaluate(_JS_VIEW)
    assert (geo["T"], geo["P"], geo["fd"]) == (2000, 1500, 500)
    lp.screenshot("0-drawn", w)
    probe = Probe(lp)
    assert probe.value("view.window") == [0, 2000]

    # hover: a token after the routing divergence, in grid B; the panel names it, the kernel's `hover` follows
    for near, grid in ((700, "b"), (1200, "a")):
        w.evaluate("e => e.scrollIntoView({block: 'center'})")      # a probe run scrolls the notebook to its cell
        x, y, t = _point_near(w.evaluate(_JS_VIEW), near, grid, row=3)
        assert abs(t - near) <= 3
        lp.page.mouse.move(x, y)
        head = w.locator(".cl-cv-hover-head")
        lp.page.wait_for_function("([e, t]) => e.textContent.startsWith(`token ${t} `)", arg=[head.element_handle(), t], timeout=10_000)
        assert "· same token" in head.inner_text()
        assert probe.value("view.hover", want=t) == t
        lp.screenshot(f"1-hover-{t}", w)

    # the kernel moves the view: a window set in Python is drawn (the axis follows) and the button jumps back
    probe.value("setattr(view, 'window', [400, 600]) or view.window", want=[400, 600])
    lp.page.wait_for_function("e => { const s = e.querySelector('.cl-cv').__compareView.st; return s.start === 400 && s.end === 600; }",
                              arg=w.element_handle(), timeout=10_000)
    w.locator("button", has_text="zoom out").click()
    assert probe.value("view.window", want=[0, 2000]) == [0, 2000]
    w.locator("button", has_text="go to first divergence").click()
    assert probe.value("view.hover", want=500) == 500
    start, end = probe.value("view.window")
    assert start <= 500 < end and end - start <= 64
    lp.screenshot("2-jumped", w)
    assert not [m for m in lp.console if m.startswith("pageerror")], lp.console
