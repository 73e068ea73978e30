"""The three widgets driven in a real JupyterLab (tests/browser.py: one Lab server for the module, Debian chromium,
no request off loopback): a test moves the mouse, picks options and clicks buttons as a reader would, then checks
both what the view shows and what the kernel's widget object says, read back by running a follow-up cell in the
same notebook (a probe cell appended at the end, re-run until the value arrives: a view's changes reach the kernel
as comm messages, with no promise as to when).

- RoutingExplorer on the demo TIR trace: hover (the panel's token and every MoE layer's experts == the trace's),
  the layer <select>, the segment filter, a shift-drag brush (canvas pixels, the load heatmap == `explorer.load()`).
- TIRStepper on the same trace: first / prev / next / last, play, and `index` set from Python.
- ThinkingViewer: a click on a step opens and selects it; its layer picker; `step` set from Python.
- TIRStepper.live with the demo model: the live text grows while the run goes, the finished run shows its answer;
  a second run stopped with its Stop button ends as stopped.

Screenshots after each interaction go to tests/artifacts/<test>-<label>.png (look at them). Waits are on conditions;
timings are printed (`pytest -s`)."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from browser import chromium, lab_page, lab_server, notebook  # noqa: F401 (pytest fixtures)

REPO = Path(__file__).resolve().parents[1]
DEMO_TIR = REPO / "tests" / "data" / "demo_tir_0.0.1.trace.safetensors"
TRACE_FILE = "demo_tir.trace.safetensors"        # its name in the Lab root (add_notebook copies notebooks only)

# The explorer's grid geometry (cascade_lab/js/routing_explorer.js): the plot starts GRID_LEFT px into the canvas
# and ends 4 px before its right edge; MoE layer rows start TOP px down and are ROW_H(L) px high.
GRID_LEFT, GRID_RIGHT, TOP = 44, 4, 14
ROW_H = lambda L: max(6, min(24, 260 // L))  # noqa: E731


@pytest.fixture(scope="module")
def trace():
    from cascade_lab.trace import Trace
    return Trace.load(DEMO_TIR)


def _timings(label: str, **secs):
    print(f"\n[timing] {label}: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in secs.items()))


# ---------------------------------------------------------------- follow-up cells

_JS_RUN_CELL = """async ([i, source]) => {
  const app = window.jupyterapp, nb = app.shell.currentWidget.content, shared = nb.model.sharedModel;
  if (i === null) { shared.insertCell(shared.cells.length, {cell_type: 'code', source}); i = shared.cells.length - 1; }
  else if (source !== null) shared.cells[i].setSource(source);
  nb.activeCellIndex = i;
  nb.deselectAll();
  const ok = await app.commands.execute('notebook:run-cell');
  return {index: i, ok};
}"""
_JS_CELL_DONE = """(i) => {
  const panel = window.jupyterapp.shell.currentWidget, c = panel.content.widgets[i];
  const k = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return c.model.executionCount !== null && !c.node.querySelector('.jp-InputPrompt').textContent.includes('*')
    && k && k.status === 'idle';
}"""
_JS_CELL_TEXT = """(i) => {
  const c = window.jupyterapp.shell.currentWidget.content.widgets[i], out = [];
  for (let j = 0; j < c.model.outputs.length; j++) {
    const o = c.model.outputs.get(j).toJSON();
    if (o.output_type === 'stream') out.push(Array.isArray(o.text) ? o.text.join('') : o.text);
    if (o.output_type === 'error') out.push(`\\n!!ERROR ${o.ename}: ${o.evalue}\\n` + (o.traceback || []).join('\\n').replace(/\\x1b\\[[0-9;]*m/g, ''));
  }
  return out.join('');
}"""


def run_cell(lp, index: int | None, source: str | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run code cell `index` of the open notebook (with `source` put in first, unless None), or a new cell appended
    with `source` when `index` is None, as Lab's `notebook:run-cell` does; wait until it ran and the kernel is idle.
    Returns (its index, its stream output); fails on an error output."""
    r = lp.page.evaluate(_JS_RUN_CELL, [index, source])
    try: lp.page.wait_for_function(_JS_CELL_DONE, arg=r["index"], timeout=timeout * 1000, polling=50)
    except Exception as e: lp._fail(f"cell {r['index']} did not finish within {timeout:.0f} s ({e})")
    text = lp.page.evaluate(_JS_CELL_TEXT, r["index"])
    if "!!ERROR" in text: lp._fail(f"cell {r['index']} raised:\n{text}")
    return r["index"], text


def kernel_value(lp, expr: str, until=lambda v: True, timeout: float = 15):
    """The JSON value of Python `expr` in the notebook's kernel, read by running a probe cell (appended at the end
    the first time, then re-run) until `until(value)` holds; fails with the last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        lp._probes = getattr(lp, "_probes", 0) + 1            # a fresh mark per run: never an earlier run's output
        mark = f"__value_{lp._probes}__ "
        source = f"import json as _json\nprint({mark!r} + _json.dumps({expr}))"
        idx, text = run_cell(lp, getattr(lp, "_probe_cell", None), source)
        lp._probe_cell = idx
        lines = [ln[len(mark):] for ln in text.splitlines() if ln.startswith(mark)]
        if len(lines) != 1: lp._fail(f"the probe cell printed no value for {expr}: {text!r}")
        value = json.loads(lines[0])
        if until(value): return value
        if time.monotonic() > deadline: lp._fail(f"the kernel's {expr} stayed {value!r} for {timeout:.0f} s")
        time.sleep(0.1)


# ---------------------------------------------------------------- page helpers

def wait_for(lp, what: str, js: str, arg=None, timeout: float = 15):
    "Wait until in-page function `js(arg)` is truthy (polled every animation frame); fail naming `what`."
    try: return lp.page.wait_for_function(js, arg=arg, timeout=timeout * 1000, polling="raf").json_value()
    except Exception as e: lp._fail(f"{what}: not within {timeout:.0f} s ({e})")


def wait_text(lp, locator, pred, what: str, timeout: float = 15) -> str:
    "Wait until `pred(locator's inner text)`; returns the text."
    deadline, text = time.monotonic() + timeout, None
    while True:
        try: text = locator.inner_text(timeout=1000)
        except Exception: text = None
        if text is not None and pred(text): return text
        if time.monotonic() > deadline: lp._fail(f"{what}: the text is {text!r} after {timeout:.0f} s")
        time.sleep(0.03)


def centre(locator):
    "Scroll `locator` to the middle of the viewport (before pointing at it or taking its screenshot)."
    locator.evaluate("e => e.scrollIntoView({block: 'center', inline: 'nearest'})")
    return locator


def wait_changed(lp, canvas, before: str, what: str, timeout: float = 10) -> str:
    "Wait until <canvas> `canvas` holds other pixels than data URL `before`; returns its new data URL."
    return wait_for(lp, what, "([c, before]) => { const u = c.toDataURL(); return u !== before && u; }",
                    [canvas.element_handle(), before], timeout)


_JS_PIXEL = """((c, x, y) => { const k = c.width / c.getBoundingClientRect().width;
  return Array.from(c.getContext('2d').getImageData(Math.floor(x * k), Math.floor(y * k), 1, 1).data); })"""


def pixel(canvas, x: float, y: float) -> list[int]:
    "RGBA of <canvas> `canvas` at css px (x, y) from its top left."
    return canvas.evaluate(f"c => {_JS_PIXEL}(c, {x}, {y})")


def data_url(locator) -> str:
    return locator.evaluate("c => c.toDataURL()")


def open_and_run(lp, server, nb: dict, name: str, widgets: int = 1):
    "Add `nb`, open it, run all, wait for its widgets and the end: (seconds to open, to the widgets, to the end)."
    server.add_notebook(nb, name)
    opened = lp.open(name)
    lp.run_all()
    shown = lp.wait_widgets(widgets, timeout=90)
    done = lp.wait_done(timeout=90)
    return opened, shown, done


def widget(lp, source: str):
    "The widget output of the cell whose source contains `source`, scrolled into view."
    lp.page.set_default_timeout(10_000)
    w = lp.widget_outputs(within=lp.cell_output(source))
    assert w.count() == 1, f"the cell {source!r} shows {w.count()} widget outputs"
    # a progressive explorer (detail "full") first draws its top-1 planes, then gets the rest from the kernel
    lp.page.wait_for_function("el => !el.querySelector('[data-pending]')", arg=w.first.element_handle(), timeout=30_000)
    return centre(w.first)


def page_errors(lp) -> list[str]:
    return [m for m in lp.console if m.startswith("pageerror")]


# ---------------------------------------------------------------- RoutingExplorer

EXPLORER_NB = notebook(
    "from cascade_lab.trace import Trace\nfrom cascade_lab.explorer import RoutingExplorer\n"
    f"trace = Trace.load({TRACE_FILE!r})",
    "explorer = RoutingExplorer(trace, detail='full')\nexplorer")


def _grid_xy(grid, T: int, L: int, t: int, row: int) -> tuple[int, int]:
    """Page coordinates of a pixel in token `t`'s column, MoE layer row `row`, of the whole-run view. Whole pixels:
    the browser hands mouse events integer client coordinates (a token is ~2 px wide here), and the view maps
    pixel x to token floor((x - left - GRID_LEFT) / plot width * T)."""
    box = grid.bounding_box()
    plot_w = box["width"] - GRID_LEFT - GRID_RIGHT
    token_at = lambda px: int((px - box["x"] - GRID_LEFT) / plot_w * T)  # noqa: E731
    centre = box["x"] + GRID_LEFT + (t + 0.5) * plot_w / T
    px = min((p for p in range(int(centre) - 3, int(centre) + 4) if token_at(p) == t), key=lambda p: abs(p - centre))
    return px, int(box["y"] + TOP + (row + 0.5) * ROW_H(L))


def _heatmap_readout(lp, w, layer: int, expert: int, E: int, L: int) -> int:
    "Point at heatmap cell (layer, expert) and return the count the readout under it says."
    load = centre(w.locator("canvas.cl-rx-load"))
    box = load.bounding_box()
    cw, ch = (box["width"] - 2) / E, (box["height"] - 2) / L         # a 1 px border around the cells
    lp.page.mouse.move(box["x"] + 1 + (expert + 0.5) * cw, box["y"] + 1 + (layer + 0.5) * ch)
    text = w.locator(".cl-rx-load-hover").inner_text()
    m = re.fullmatch(r"layer (\d+), expert (\d+): chosen ([\d,]+) times", text)
    assert m and int(m[2]) == expert, f"heatmap readout {text!r} for expert {expert}"
    return int(m[3].replace(",", ""))


def _check_load(lp, w, expect_title: str, L: int, K: int, E: int) -> np.ndarray:
    """The heatmap the browser counted == `explorer.load()` in the kernel (which follows the view's brush and
    filter), read through the readout for the three most used cells of each layer; returns it."""
    title = w.locator(".cl-rx-load-title").inner_text()
    assert expect_title in title, title
    load = np.array(kernel_value(lp, "explorer.load().tolist()"))
    assert load.shape == (L, E)
    # the counts behind the heatmap (the view's own state, exposed for tests as el.__routingExplorer)
    shown = np.array(w.evaluate("el => Array.from(el.querySelector('.cl-rx').__routingExplorer.ui.panelData.load)"))
    np.testing.assert_array_equal(shown.reshape(L, E), load)
    for l in range(L):
        for e in np.argsort(-load[l], kind="stable")[:3]:
            assert _heatmap_readout(lp, w, l, int(e), E, L) == load[l, e], (l, e)
    n = int(re.search(r": ([\d,]+) tokens$", title)[1].replace(",", ""))
    assert load.sum() == n * L * K, (title, load.sum())   # k experts a token and layer
    return load


def test_routing_explorer_hover_layer_segment_brush(lab_server, lab_page, trace):
    lp, r = lab_page, trace.routing
    T, L, K, E = len(trace), len(r.layers), r.experts.shape[2], r.num_experts
    shutil.copy(DEMO_TIR, lab_server.root / TRACE_FILE)
    opened, shown, done = open_and_run(lp, lab_server, EXPLORER_NB, "explorer.ipynb")
    t0 = time.monotonic()
    w = widget(lp, "RoutingExplorer(trace")
    grid, text, sel = w.locator("canvas.cl-rx-grid"), w.locator("canvas.cl-rx-text"), w.locator(".cl-rx-field select")
    assert sel.count() == 4 and [sel.nth(i).input_value() for i in range(4)] == ["0", "0", "", "load"]   # layer, slot, segment, panel
    assert kernel_value(lp, "explorer.window") == [0, T]
    lp.screenshot("0-initial", w)

    # hover: three tokens (prompt, tool call, the second step's reasoning); the panel shows that token and its
    # experts in every MoE layer, best first, and the kernel's `hover` follows
    for t in (200, 420, 485):
        centre(grid)
        lp.page.mouse.move(*_grid_xy(grid, T, L, t, row=1))
        head = wait_text(lp, w.locator(".cl-rx-hover-head"), lambda s: s.startswith(f"token {t} "), f"hover on token {t}")
        assert head.startswith(f"token {t} {json.dumps(trace.tokens[t], ensure_ascii=False)} · "), head
        rows = w.locator(".cl-rx-hover-table tr")
        assert rows.count() == L
        for l in range(L):
            assert rows.nth(l).locator("th").inner_text() == f"L{r.layers[l]}"
            cells = rows.nth(l).locator("td").all_inner_texts()
            assert [int(c.split()[0]) for c in cells] == r.experts[t, l].tolist(), (t, l, cells)
            np.testing.assert_allclose([float(c.split()[2]) for c in cells], r.weights[t, l].astype(np.float32), atol=0.0075)
        assert kernel_value(lp, "explorer.hover", until=lambda v: v == t) == t
        lp.screenshot(f"1-hover-{t}", w)

    # the layer <select>: the text strip (coloured by the layer's experts) and the grid (its outline) are redrawn,
    # the balance line names the new layer, the hover panel marks its row, and the kernel's `layer` follows
    centre(w)
    before = data_url(grid), data_url(text), w.locator(".cl-rx-balance").inner_text()
    assert before[2].startswith(f"layer {r.layers[0]}:")
    sel.nth(0).select_option("2")
    wait_text(lp, w.locator(".cl-rx-balance"), lambda s: s.startswith(f"layer {r.layers[2]}:"), "balance line after the layer change")
    wait_changed(lp, grid, before[0], "the grid redrawn for the layer (its outline)")
    wait_changed(lp, text, before[1], "the text strip recoloured for the layer")
    assert w.locator(".cl-rx-hover-table tr").nth(2).locator("td.cl-rx-sel").count() == 1
    assert kernel_value(lp, "explorer.layer", until=lambda v: v == 2) == 2
    lp.screenshot("2-layer", w)

    # the segment filter: tokens outside it are dimmed (grid and strip change), the heatmap counts only them
    whole = _check_load(lp, w, f"whole run: {int(r.recorded_mask().sum()):,} tokens", L, K, E)
    centre(w)
    before = data_url(grid), data_url(text), w.locator(".cl-rx-balance").inner_text()
    sel.nth(2).select_option("reasoning")
    wait_text(lp, w.locator(".cl-rx-load-title"), lambda s: "reasoning only" in s, "load title after the segment filter")
    wait_changed(lp, grid, before[0], "the grid dimmed outside the filter")
    wait_changed(lp, text, before[1], "the text strip dimmed outside the filter")
    assert w.locator(".cl-rx-balance").inner_text() != before[2]
    assert kernel_value(lp, "explorer.segment", until=lambda v: v == "reasoning") == "reasoning"
    reasoning = _check_load(lp, w, "whole run, reasoning only: 32 tokens", L, K, E)
    assert not np.array_equal(reasoning, whole)
    lp.screenshot("3-segment", w)

    # a shift-drag brush over tokens 380..470: the kernel's `brush` becomes [380, 471), the heatmap counts its
    # reasoning tokens only (380..392), and the brush is drawn (its bar in the gap above the grid's rows)
    centre(grid)
    a, b = 380, 470
    bar = (_grid_xy(grid, T, L, (a + b) // 2, 0)[0] - grid.bounding_box()["x"], TOP - 2.5)   # css px in the canvas
    assert pixel(grid, *bar)[3] == 0, "something is drawn where the brush bar goes"
    lp.page.keyboard.down("Shift")
    lp.page.mouse.move(*_grid_xy(grid, T, L, a, row=0))
    lp.page.mouse.down()
    lp.page.mouse.move(*_grid_xy(grid, T, L, b, row=0), steps=6)
    lp.page.mouse.up()
    lp.page.keyboard.up("Shift")
    assert kernel_value(lp, "explorer.brush", until=lambda v: v != []) == [a, b + 1]
    wait_for(lp, "the brush bar drawn above the grid", f"c => {_JS_PIXEL}(c, {bar[0]}, {bar[1]}).join() === '11,79,196,255'",
             grid.element_handle())
    assert f"brush {a}–{b + 1}" in w.locator(".cl-rx-caption").inner_text()
    brushed = _check_load(lp, w, f"tokens {a}–{b + 1}, reasoning only: 13 tokens", L, K, E)
    assert not np.array_equal(brushed, reasoning)
    from cascade_lab.views import expert_load
    np.testing.assert_array_equal(brushed, expert_load(trace, tokens=slice(a, b + 1), segment="reasoning"))
    centre(w)
    lp.screenshot("4-brush", w)

    # and back from Python: the controls and the heatmap follow the traits
    run_cell(lp, None, "explorer.layer, explorer.brush = 0, []")
    wait_text(lp, w.locator(".cl-rx-load-title"), lambda s: s.endswith("whole run, reasoning only: 32 tokens"),
              "the load title after `explorer.brush = []` in Python")
    assert sel.nth(0).input_value() == "0" and not re.search(r"· brush \d", w.locator(".cl-rx-caption").inner_text())
    assert w.locator(".cl-rx-balance").inner_text().startswith(f"layer {r.layers[0]}:")
    centre(w)
    lp.screenshot("5-from-python", w)
    assert not page_errors(lp), page_errors(lp)
    _timings("routing explorer", open_notebook=opened, run_all_to_widget=shown, run_all_to_done=done,
             interactions=time.monotonic() - t0)


def _panel_numbers(w, key: str):
    return w.evaluate(f"el => Array.from(el.querySelector('.cl-rx').__routingExplorer.ui.panelData.{key})")


def test_routing_explorer_panels(lab_server, lab_page, trace):
    """The side panels in Lab: picking one from the page reaches the kernel (`panel`); co-activation counted in the
    browser == the kernel's `explorer.coactivation()`; a click on a matrix row picks that expert (`expert`), and
    the vocabulary table lists what the kernel's `explorer.vocabulary()` lists; the entropy panel draws."""
    lp, r = lab_page, trace.routing
    E = r.num_experts
    shutil.copy(DEMO_TIR, lab_server.root / TRACE_FILE)
    open_and_run(lp, lab_server, EXPLORER_NB, "explorer_panels.ipynb")
    w = widget(lp, "RoutingExplorer(trace")
    panel = w.locator(".cl-rx-panel-bar select")
    centre(panel)
    panel.select_option("coactivation")
    assert kernel_value(lp, "explorer.panel", until=lambda v: v == "coactivation") == "coactivation"
    wait_text(lp, w.locator(".cl-rx-load-title"), lambda s: s.startswith("co-activation in layer"), "the co-activation title")
    want = np.array(kernel_value(lp, "explorer.coactivation().tolist()"))
    np.testing.assert_array_equal(np.reshape(_panel_numbers(w, "matrix"), (E, E)), want)
    cvs = centre(w.locator("canvas.cl-rx-load"))
    box = cvs.bounding_box()
    cw = (box["width"] - 2) / E
    lp.page.mouse.click(box["x"] + 1 + 2.5 * cw, box["y"] + 1 + 5.5 * cw)          # row 5: expert 5
    assert kernel_value(lp, "explorer.expert", until=lambda v: v == 5) == 5
    text = w.locator(".cl-rx-load-hover").inner_text()
    assert re.fullmatch(rf"experts 5 and 2 together: {want[5, 2]:,} tokens \(expert 5 alone: {want[5, 5]:,}\)", text), text
    lp.screenshot("panel-coactivation", w)
    panel.select_option("vocabulary")
    wait_text(lp, w.locator(".cl-rx-load-title"), lambda s: s.startswith("expert 5 in layer"), "the vocabulary title")
    rows = w.locator(".cl-rx-vocab tr")
    vocab = kernel_value(lp, "explorer.vocabulary()")
    for i, row in enumerate(vocab[:5]):
        cells = rows.nth(i + 1).locator("td").all_inner_texts()
        assert [int(cells[1].replace(",", "")), int(cells[2].replace(",", ""))] == [row["count"], row["frequency"]], (i, cells, row)
    lp.screenshot("panel-vocabulary", w)
    panel.select_option("entropy")
    wait_text(lp, w.locator(".cl-rx-load-title"), lambda s: s.startswith("routing entropy"), "the entropy title")
    np.testing.assert_allclose(_panel_numbers(w, "byLayer"), kernel_value(lp, "explorer.entropy().tolist()"), atol=0.06)
    lp.screenshot("panel-entropy", w)
    assert not page_errors(lp), page_errors(lp)


# Was a widget bug (textWindow started the strip at min(hovered - 15, view end - 400) while only ~100 tokens fit its
# 3 lines, so a hovered token among the view's last ~300 was not shown); this test failed until it was fixed.


def test_routing_explorer_text_strip_shows_hovered_token(lab_server, lab_page, trace):
    "The text strip under the grid follows the hovered token (the caption names the tokens it shows)."
    lp, r = lab_page, trace.routing
    shutil.copy(DEMO_TIR, lab_server.root / TRACE_FILE)
    open_and_run(lp, lab_server, EXPLORER_NB, "explorer_strip.ipynb")
    w = widget(lp, "RoutingExplorer(trace")
    grid = centre(w.locator("canvas.cl-rx-grid"))
    for t in (150, 420):                       # 150 is shown (tokens 107-201); 420 is not
        lp.page.mouse.move(*_grid_xy(grid, len(trace), len(r.layers), t, row=1))
        wait_text(lp, w.locator(".cl-rx-hover-head"), lambda s: s.startswith(f"token {t} "), f"hover on token {t}")
        caption = w.locator(".cl-rx-caption").inner_text()
        lp.screenshot(f"hover-{t}", w)
        a, b = map(int, re.match(r"text: tokens (\d+)–(\d+) ", caption).groups())
        assert a <= t < b, f"hovering token {t}, the text strip shows tokens {a}-{b}: {caption!r}"


# ---------------------------------------------------------------- TIRStepper

STEPPER_NB = notebook(
    "from cascade_lab.trace import Trace\nfrom cascade_lab.stepper import TIRStepper\n"
    f"trace = Trace.load({TRACE_FILE!r})",
    "stepper = TIRStepper(trace)\nstepper")


def test_tir_stepper_buttons(lab_server, lab_page, trace):
    lp = lab_page
    shutil.copy(DEMO_TIR, lab_server.root / TRACE_FILE)
    opened, shown, done = open_and_run(lp, lab_server, STEPPER_NB, "stepper.ipynb")
    t0 = time.monotonic()
    w = widget(lp, "TIRStepper(trace)")
    pos, reasoning = w.locator(".ts-pos"), w.locator(".ts-reasoning")
    button = lambda title: w.locator(f"button[title='{title}']")  # noqa: E731
    n = len(trace.steps)
    assert n == 2 and pos.inner_text() == "step 1 / 2"
    assert reasoning.inner_text() == trace.steps[0].reasoning
    assert w.locator("pre.ts-code").inner_text() == trace.steps[0].tool_calls[0]["arguments"]["code"]
    assert w.locator("pre.ts-out").inner_text() == "54"           # what the tool printed
    assert button("first step").is_disabled() and button("previous step").is_disabled()
    heat0 = data_url(w.locator("canvas.ts-heat"))
    lp.screenshot("0-step1", w)

    def at(i: int, label: str):
        "The view shows step i (counter, reasoning, the step's own heatmap) and the kernel's `index` is i."
        wait_text(lp, pos, lambda s: s == f"step {i + 1} / {n}", f"step counter after {label}")
        assert w.locator(".ts-title").inner_text().startswith(f"Step {i + 1}")
        assert w.locator(".ts-reasoning").inner_text() == trace.steps[i].reasoning
        assert (data_url(w.locator("canvas.ts-heat")) == heat0) == (i == 0)
        assert button("next step").is_disabled() == (i == n - 1) and button("first step").is_disabled() == (i == 0)
        assert kernel_value(lp, "stepper.index", until=lambda v: v == i) == i
        centre(w)
        lp.screenshot(label, w)

    button("next step").click()
    at(1, "1-next")
    assert w.locator(".ts-answer").inner_text() == trace.steps[1].content == "The answer is \\boxed{54}."
    assert w.locator("pre.ts-code").count() == 0                 # no tool call in the answering step
    button("first step").click()
    at(0, "2-first")
    button("last step").click()
    at(1, "3-last")
    button("previous step").click()
    at(0, "4-prev")
    # play from step 1: it moves to the last step on its own, then stops (playing back to False in the kernel)
    w.locator("input.ts-speed").fill("100")
    w.locator("input.ts-speed").dispatch_event("change")
    w.locator("button.ts-play").click()
    at(1, "5-played")
    assert kernel_value(lp, "[stepper.playing, stepper.speed]", until=lambda v: v == [False, 100]) == [False, 100]
    # Python moves it: the view follows
    run_cell(lp, None, "stepper.index = 0")
    wait_text(lp, pos, lambda s: s == "step 1 / 2", "step counter after `stepper.index = 0`")
    centre(w)
    lp.screenshot("6-from-python", w)
    assert not page_errors(lp), page_errors(lp)
    _timings("TIR stepper", open_notebook=opened, run_all_to_widget=shown, run_all_to_done=done,
             interactions=time.monotonic() - t0)


# ---------------------------------------------------------------- ThinkingViewer

VIEWER_NB = notebook(
    "from cascade_lab.trace import Trace\nfrom cascade_lab.stepper import ThinkingViewer\n"
    f"trace = Trace.load({TRACE_FILE!r})",
    "viewer = ThinkingViewer(trace)\nviewer")


# A step's row is `.tv-step` (a <details> with a <summary>, or one element with a page of rows at a time: the markup
# may change, these are what a reader sees): opened when it has `open` (attribute or class), its text in `.tv-text`.
_JS_ROW_OPEN = "r => r.open === true || r.classList.contains('open')"


def test_thinking_viewer_select_step(lab_server, lab_page, trace):
    from cascade_lab.stepper import thinking_steps
    from cascade_lab.views import expert_load
    lp = lab_page
    shutil.copy(DEMO_TIR, lab_server.root / TRACE_FILE)
    opened, shown, done = open_and_run(lp, lab_server, VIEWER_NB, "viewer.ipynb")
    t0 = time.monotonic()
    w = widget(lp, "ThinkingViewer(trace)")
    steps = thinking_steps(trace, 0)
    rows = w.locator(".tv-step")
    assert rows.count() == len(steps) == 1
    assert steps[0].text.split("\n")[0] in rows.first.inner_text()
    assert not rows.first.evaluate(_JS_ROW_OPEN) and w.locator(".tv-text >> visible=true").count() == 0
    assert w.locator(".tv-step.sel").count() == 0 and "select a step" in w.locator(".tv-routing").inner_text()
    assert kernel_value(lp, "[viewer.selected_step, viewer.selected]") == [-1, []]
    strip0 = data_url(w.locator("canvas.tv-strip"))
    lp.screenshot("0-initial", w)

    # a click on the step: it opens with its full text, is marked selected (list and strip), the routing panel
    # shows its load in MoE layer 0, and the kernel's selected_step / selected are that step and its tokens
    rows.first.click(position={"x": 40, "y": 6})
    wait_for(lp, "the step opens", f"r => ({_JS_ROW_OPEN})(r)", rows.first.element_handle())
    assert w.locator(".tv-text").inner_text() == steps[0].text
    assert w.locator(".tv-step.sel").count() == 1
    assert data_url(w.locator("canvas.tv-strip")) != strip0, "the strip does not show the selected step"
    s = steps[0]
    assert kernel_value(lp, "[viewer.selected_step, viewer.selected]", until=lambda v: v[0] == 0) == [0, [s.start, s.end]]

    def top_text(layer: int) -> str:
        row = expert_load(trace, tokens=slice(s.start, s.end))[layer]
        top = sorted(((int(c), e) for e, c in enumerate(row)), key=lambda x: -x[0])[:5]
        return "top: " + ", ".join(f"expert {e} ({c}/{s.end - s.start} tok)" for c, e in top if c > 0)
    assert w.locator(".tv-top").inner_text() == top_text(0)
    lp.screenshot("1-selected", w)

    # the routing panel's layer picker: the kernel's `layer` follows and sends that layer's loads back
    w.locator(".tv-routing select").select_option("2")
    assert kernel_value(lp, "viewer.layer", until=lambda v: v == 2) == 2
    wait_text(lp, w.locator(".tv-top"), lambda t: t == top_text(2), "the routing panel after picking layer 2")
    centre(w)
    lp.screenshot("2-layer", w)

    # a second click closes it; it stays selected
    rows.first.click(position={"x": 40, "y": 6})
    wait_for(lp, "the step closes", f"r => !({_JS_ROW_OPEN})(r)", rows.first.element_handle())
    assert w.locator(".tv-text >> visible=true").count() == 0 and w.locator(".tv-step.sel").count() == 1

    # Python shows the run's second generation step: its thinking replaces the list, nothing selected
    run_cell(lp, None, "viewer.step = 1")
    steps1 = thinking_steps(trace, 1)
    wait_text(lp, rows.first, lambda t: steps1[0].text.split("\n")[0][:200] in t, "the list after `viewer.step = 1`")
    assert rows.count() == len(steps1) and w.locator(".tv-step.sel").count() == 0
    assert kernel_value(lp, "[viewer.selected_step, viewer.selected]") == [-1, []]
    centre(w)
    lp.screenshot("3-step2", w)
    assert not page_errors(lp), page_errors(lp)
    _timings("thinking viewer", open_notebook=opened, run_all_to_widget=shown, run_all_to_done=done,
             interactions=time.monotonic() - t0)


# ---------------------------------------------------------------- TIRStepper.live

LIVE_ARGS = "greedy=True, max_steps=3, max_new_tokens=160"
LIVE_NB = notebook(
    "from transformers.utils import logging as hf_logging\nhf_logging.set_verbosity_error()\n"
    "hf_logging.disable_progress_bar()\n"
    "from cascade_lab.demo import make_problems\nfrom cascade_lab.model import load_model\n"
    "from cascade_lab.stepper import TIRStepper\n"
    "model, tok = load_model()\nproblem = make_problems(1, 3000)[0]",
    f"stepper = TIRStepper.live(problem['question'], model=model, tokenizer=tok, {LIVE_ARGS},\n"
    "                          reference=problem['answer'])\nstepper",
    f"stopped = TIRStepper.live(problem['question'], model=model, tokenizer=tok, {LIVE_ARGS})\nstopped")

# Samples the live stepper of code cell `i` every 20 ms from the moment it shows, keeping each state that differs
# from the one before: the live text, the step counter, whether it says it is running, its Stop button, its badges.
_JS_SAMPLE = """(i) => {
  const panel = window.jupyterapp.shell.currentWidget, log = [], t0 = performance.now();
  window.__cl_samples = log;
  const tick = () => {
    const c = panel.content.widgets[i], root = c && c.node.querySelector('.cl-ts');
    if (!root) return;
    const live = root.querySelector('pre.ts-live'), pos = root.querySelector('.ts-pos');
    const s = {live: live ? live.textContent : null, pos: pos ? pos.textContent : null,
               running: !!root.querySelector('.badge.run'), stop: !!root.querySelector('button.stop'),
               badges: [...root.querySelectorAll('.ts-meta .badge')].map(b => b.textContent).join('|')};
    const last = log[log.length - 1];
    if (!last || ['live', 'pos', 'running', 'stop', 'badges'].some(k => last[k] !== s[k])) log.push({...s, ms: Math.round(performance.now() - t0)});
  };
  window.__cl_sampler = setInterval(tick, 20);
  return true;
}"""


def _growth(samples: list[dict]) -> list[tuple[int, int]]:
    "(length before, length after) of each sample whose live text extends the previous one, while running."
    out = []
    for a, b in zip(samples, samples[1:]):
        if a["live"] and b["live"] and a["running"] and b["running"] and len(b["live"]) > len(a["live"]) \
                and b["live"].startswith(a["live"]):
            out.append((len(a["live"]), len(b["live"])))
    return out


def test_tir_stepper_live_and_stop(lab_server, lab_page):
    lp = lab_page
    lab_server.add_notebook(LIVE_NB, "live.ipynb")
    opened = lp.open("live.ipynb")
    t0 = time.monotonic()
    run_cell(lp, 0, timeout=90)
    loaded = time.monotonic() - t0

    # the live run: sampled from the page while it goes
    lp.page.evaluate(_JS_SAMPLE, 1)
    t1 = time.monotonic()
    run_cell(lp, 1, timeout=60)
    w = widget(lp, "stepper = TIRStepper.live(")
    lp.screenshot("0-running", w)
    wait_for(lp, "the live run ends (no running badge, no Stop button)",
             "el => el.querySelector('.ts-pos') && !el.querySelector('.cl-ts .badge.run') && !el.querySelector('button.stop')"
             " && el.querySelector('.ts-meta .badge.ok')", w.element_handle(), timeout=90)
    ran = time.monotonic() - t1
    samples = lp.page.evaluate("() => { clearInterval(window.__cl_sampler); return window.__cl_samples; }")
    print(f"\n[live] {len(samples)} distinct states seen; live text lengths: "
          + " ".join(f"{len(s['live']) if s['live'] is not None else '-'}@{s['ms']}" for s in samples))
    assert any(s["running"] and s["stop"] for s in samples), "the widget never showed the run going (running + Stop)"
    grew = _growth(samples)
    assert len(grew) >= 1, f"the live text never grew between two observations during the run: {samples}"
    assert len({n for pair in grew for n in pair}) >= 2
    # finished: the answer in the header and in the last step's answer, stop reason "answer", the last step shown
    info = kernel_value(lp, "[stepper.trace.answer, stepper.trace.meta['tir']['stop_reason'], len(stepper.steps), "
                            "stepper.running, stepper.trace.meta['grade']['correct'], problem['answer']]")
    answer, reason, n, running, correct, reference = info
    print(f"\n[live] the demo model answered {answer} (reference {reference}, correct: {correct})")
    assert reason == "answer" and not running and answer is not None, info
    head = w.locator(".ts-meta").inner_text()
    assert f"answer {answer} {'correct' if correct else 'wrong'}" in head and "stop: answer" in head, head
    assert w.locator(".ts-pos").inner_text() == f"step {n} / {n}"
    assert f"\\boxed{{{answer}}}" in w.locator(".ts-answer").inner_text()
    assert w.locator("pre.ts-live").count() == 0
    centre(w)
    lp.screenshot("1-finished", w)

    # the second run: Stop is clicked as soon as the first generated text shows
    t2 = time.monotonic()
    run_cell(lp, 2, timeout=60)
    w2 = widget(lp, "stopped = TIRStepper.live(")
    wait_for(lp, "the second run's first text", "el => { const p = el.querySelector('pre.ts-live'); return p && p.textContent.length > 0; }",
             w2.element_handle(), timeout=60)
    lp.screenshot("2-before-stop", w2)
    w2.locator("button.stop").click()
    wait_text(lp, w2.locator(".ts-meta"), lambda s: "stop: stopped" in s, "the header after Stop", timeout=60)
    stopped_in = time.monotonic() - t2
    assert w2.locator("button.stop").count() == 0 and w2.locator(".cl-ts .badge.run").count() == 0
    info = kernel_value(lp, "[stopped.wait(60).meta['tir']['stop_reason'], stopped.status, stopped.running, stopped.trace.answer]")
    assert info == ["stopped", "finished", False, None], info
    centre(w2)
    lp.screenshot("3-stopped", w2)
    assert not page_errors(lp), page_errors(lp)
    _timings("live stepper", open_notebook=opened, load_model=loaded, live_run_to_finished=ran,
             stopped_run_to_stopped=stopped_in)
