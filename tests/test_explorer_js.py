"""The RoutingExplorer's JavaScript (cascade_lab/js/routing_explorer.js) in a real browser, without Jupyter.

A page on loopback imports the ES module as anywidget would and hands its `render` a stand-in for the widget
model: `get` / `set` / `save_changes` / `on` / `off` over the traits `pack` produced, the binary ones as DataView
(what ipywidgets gives a view). Headless Chromium (Debian's /usr/bin/chromium, driven by playwright) then
zooms, pans, hovers, brushes and filters it, and reads the timings the view reports on its element.
The full notebook path (JupyterLab, the widget manager) is tested separately.

Skipped, saying why, when playwright or chromium is missing (`apt-get install -y chromium`).
Set EXPLORER_SHOTS=/some/dir to keep screenshots of each view.
"""
import base64
import functools
import http.server
import json
import os
import shutil
import statistics
import threading
from pathlib import Path

import numpy as np
import pytest

from cascade_lab.explorer import JS_DIR, RoutingExplorer
from cascade_lab.trace import Trace, synthetic_trace
from cascade_lab.views import coactivation, entropy_by_layer, expert_load, expert_vocabulary, transitions

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
BINARY = ("experts", "weights", "scores", "rentropy", "kinds", "recorded", "logprobs", "entropies", "text", "offsets")
VIEW = ("layer", "slot", "segment", "brush", "hover", "window", "panel", "expert")

try:
    from playwright.sync_api import sync_playwright
except ImportError:                                    # pragma: no cover
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}: apt-get install -y chromium"),
]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="routing_explorer.css"><link rel="icon" href="data:,">
<style>body{margin:0;width:1000px}</style></head><body><div id="w"></div>
<script type="module">
window.errors = [];
window.addEventListener("error", (e) => window.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.errors.push(String(e.reason)));
import widget from "./routing_explorer.js";
function traits(raw) {
  const out = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v && v.b64 !== undefined) {
      const bin = atob(v.b64), u = new Uint8Array(bin.length + 3);
      for (let i = 0; i < bin.length; i++) u[i + 3] = bin.charCodeAt(i);
      out[k] = new DataView(u.buffer, 3, bin.length);      // at an odd offset, as a message's buffers may be
    } else out[k] = v;
  }
  return out;
}
const state = traits(await (await fetch("state.json")).json()), handlers = {};
window.sets = []; window.saves = 0; window.sent = [];
// an update from the kernel with several traits (hold_sync): every value first, then the change events
window.update = async (file) => {
  const u = traits(await (await fetch(file)).json());
  Object.assign(state, u);
  for (const k of Object.keys(u)) (handlers["change:" + k] || []).forEach((f) => f());
};
const model = {
  send: (msg) => { window.sent.push(msg); },
  get: (k) => state[k],
  set: (k, v) => { state[k] = v; window.sets.push([k, v]); },
  save_changes: () => { window.saves++; },
  on: (ev, f) => { (handlers[ev] ||= []).push(f); },
  off: (ev, f) => { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
};
// what a change made in Python looks like to the view
window.fromPython = (k, v) => { state[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); };
window.state = state;
const el = document.getElementById("w");
try { window.cleanup = await widget.render({ model, el }); } catch (e) { window.errors.push(String(e && e.stack || e)); }
</script></body></html>"""


def _state(w: RoutingExplorer, complete: bool = True) -> dict:
    if complete: w.complete()                                   # the full planes, as a live view gets them once asked
    out = {n: getattr(w, n) for n in ("info",) + VIEW}
    out |= {n: {"b64": base64.b64encode(getattr(w, n)).decode()} for n in BINARY}
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "A loopback server over a folder with the page, the module, its CSS and one state file per case."
    root = tmp_path_factory.mktemp("explorer")
    (root / "index.html").write_text(PAGE)
    for f in ("routing_explorer.js", "routing_explorer.css"): shutil.copy(JS_DIR / f, root / f)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def big():
    return synthetic_trace(32768)


@pytest.fixture(scope="module")
def demo():
    return Trace.load(ROOT / "tests/data/demo_tir_0.0.1.trace.safetensors")


def _open(browser, site, widget, name, complete: bool = True):
    "A page showing `widget`, first drawn; the page and its element."
    root, url = site
    (root / "state.json").write_text(json.dumps(_state(widget, complete)))
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.on("console", lambda m: m.type == "error" and print("console:", m.text))
    page.goto(f"{url}/index.html")
    page.wait_for_function("document.getElementById('w').dataset.ready === '1' || (window.errors || []).length", timeout=30000)
    assert page.evaluate("window.errors") == []
    shots = os.environ.get("EXPLORER_SHOTS")
    if shots: page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)
    return page, page.locator("#w")


def _grid_point(page, token_frac=0.5, row=0):
    "Page coordinates of a point in the grid: `token_frac` across the plot, in MoE layer row `row`."
    box = page.locator(".cl-rx-grid").bounding_box()
    geo = page.evaluate("(() => { const g = document.getElementById('w').__routingExplorer.geo; return [g.top, g.rowH, g.plotW]; })()")
    top, row_h, plot_w = geo
    return box["x"] + 44 + token_frac * plot_w, box["y"] + top + (row + 0.5) * row_h


def _redraw_ms(page, n, T):
    """Milliseconds of `n` full redraws of the zoomed-out grid, each forced by a window (set as Python would set
    it) that moves every column's tokens: no cached pixels can be reused."""
    out = []
    for i in range(n):
        page.evaluate(f"window.fromPython('window', [{i % 2}, {T - (i // 2) % 3}])")
        out.append(float(page.evaluate("document.getElementById('w').dataset.redrawMs")))
    return out


def _loads(page):
    return np.array(page.evaluate("Array.from(document.getElementById('w').__routingExplorer.ui.panelData.load)"))


@pytest.mark.parametrize("detail", ["top1", "full"])
def test_32k_draws_within_a_frame(browser, site, big, detail):
    page, el = _open(browser, site, RoutingExplorer(big, detail=detail), f"big_{detail}")
    ms = _redraw_ms(page, 12, len(big))
    print(f"{detail}: redraw at 32k tokens, fully zoomed out: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms")
    # the goal (<= 16 ms) is judged by benchmarks/bench_widgets.py: a timed assertion fails on a busy machine
    # the heatmap, counted in the browser, is the trace's own load (all k slots with "full", the top-1 with "top1")
    load = _loads(page).reshape(23, 128)
    want = expert_load(big) if detail == "full" else np.stack(
        [np.bincount(big.routing.experts[big.routing.recorded_mask(), l, 0], minlength=128) for l in range(23)])
    np.testing.assert_array_equal(load, want)
    page.close()


def test_hover_shows_every_layer(browser, site, big):
    page, el = _open(browser, site, RoutingExplorer(big, detail="full"), "hover")
    times = []
    for f in np.linspace(0.05, 0.95, 15):
        page.mouse.move(*_grid_point(page, f, 3))
        times.append(float(el.get_attribute("data-hover-ms")))
    t = page.evaluate("window.state.hover")
    print(f"hover at 32k tokens (full): median {statistics.median(times):.2f} ms, max {max(times):.2f} ms")
    assert 0 <= t < 32768 and ["hover", t] in page.evaluate("window.sets")
    head = page.locator(".cl-rx-hover-head").inner_text()
    assert head.startswith(f"token {t} ") and json.dumps(big.tokens[t]) in head
    cells = page.locator(".cl-rx-hover-table tr").nth(0).locator("td").all_inner_texts()
    r = big.routing
    assert [int(c.split()[0]) for c in cells] == r.experts[t, 0].tolist()          # all six experts, best first
    w = [float(c.split()[2]) for c in cells]
    np.testing.assert_allclose(w, r.weights[t, 0].astype(np.float32), atol=0.0075)   # half a quantisation step + the display's rounding
    s = [float(c.split()[4]) for c in cells]
    np.testing.assert_allclose(s, r.scores[t, 0].astype(np.float32), atol=0.0075)   # half a quantisation step + the display's rounding
    assert "shared expert" in page.locator(".cl-rx-shared").inner_text()
    shots = os.environ.get("EXPLORER_SHOTS")
    if shots: page.screenshot(path=str(Path(shots) / "hovered.png"), full_page=True)
    page.mouse.move(*_grid_point(page, 0.5, 40))                 # below the grid: the hovered token stays
    page.locator(".cl-rx-hover").hover()
    assert page.evaluate("window.state.hover") == t
    box = page.locator(".cl-rx-text").bounding_box()             # the text strip's tokens hover too
    page.mouse.move(box["x"] + 8, box["y"] + 8)
    assert page.evaluate("window.state.hover") != t
    page.close()


def test_zoom_to_single_tokens_and_pan(browser, site, big):
    page, el = _open(browser, site, RoutingExplorer(big), "zoom")
    x, y = _grid_point(page, 0.5, 0)
    page.mouse.move(x, y)
    for _ in range(40): page.mouse.wheel(0, -400)
    page.wait_for_timeout(400)                                   # the window goes to Python once the wheel settles
    start, end = page.evaluate("window.state.window")
    assert end - start <= 8, (start, end)
    assert abs((start + end) / 2 - 16384) < 200                 # zoomed around the pointer
    text = page.locator(".cl-rx-caption").inner_text()
    assert f"tokens {start}" in text or f"tokens {start + 1}" in text, text
    page.mouse.move(x, y); page.mouse.down(); page.mouse.move(x - 300, y, steps=5); page.mouse.up()   # pan right
    page.wait_for_timeout(400)
    s2, e2 = page.evaluate("window.state.window")
    assert s2 > start and abs((e2 - s2) - (end - start)) <= 1        # same zoom (the window is rounded out to whole tokens)
    shots = os.environ.get("EXPLORER_SHOTS")
    if shots: page.screenshot(path=str(Path(shots) / "zoomed.png"), full_page=True)
    assert float(el.get_attribute("data-redraw-ms")) > 0
    page.close()


def test_brush_segment_filter_and_python_driven_state(browser, site, demo):
    page, el = _open(browser, site, RoutingExplorer(demo, detail="full"), "demo")
    page.keyboard.down("Shift")
    page.mouse.move(*_grid_point(page, 376 / 507 + 0.001, 1)); page.mouse.down()
    page.mouse.move(*_grid_point(page, 459 / 507 - 0.001, 1), steps=4); page.mouse.up()
    page.keyboard.up("Shift")
    a, b = page.evaluate("window.state.brush")
    assert abs(a - 376) <= 1 and abs(b - 459) <= 1, (a, b)
    np.testing.assert_array_equal(_loads(page).reshape(3, 16), expert_load(demo, tokens=slice(a, b)))
    page.select_option(".cl-rx-field select >> nth=2", "reasoning")
    assert page.evaluate("window.state.segment") == "reasoning"
    np.testing.assert_array_equal(_loads(page).reshape(3, 16), expert_load(demo, tokens=slice(a, b), segment="reasoning"))
    assert "reasoning only" in page.locator(".cl-rx-load-title").inner_text()
    assert "max/mean" in page.locator(".cl-rx-balance").inner_text()
    # Python moves the view: the controls follow
    page.evaluate("window.fromPython('layer', 2); window.fromPython('slot', 3); window.fromPython('brush', [])")
    assert page.locator(".cl-rx-field select >> nth=0").input_value() == "2"
    assert page.locator(".cl-rx-field select >> nth=1").input_value() == "3"
    np.testing.assert_array_equal(_loads(page).reshape(3, 16), expert_load(demo, segment="reasoning"))
    page.evaluate("window.fromPython('window', [380, 400])")
    assert "view 380–400" in page.locator(".cl-rx-caption").inner_text()
    shots = os.environ.get("EXPLORER_SHOTS")
    if shots: page.screenshot(path=str(Path(shots) / "demo_filtered.png"), full_page=True)
    page.evaluate("window.cleanup()")                             # the view lets go of its listeners
    assert page.evaluate("window.errors") == []
    page.close()


def test_starts_from_the_traits(browser, site, demo):
    "State set in Python before the view first draws (while the planes inflate, say) is what it shows."
    w = RoutingExplorer(demo, detail="full", layer=2, slot=1, segment="tool_call", brush=[396, 459], window=[390, 470])
    page, el = _open(browser, site, w, "demo_initial")
    values = [page.locator(f".cl-rx-field select >> nth={i}").input_value() for i in range(3)]
    assert values == ["2", "1", "tool_call"]
    assert "view 390–470" in page.locator(".cl-rx-caption").inner_text()
    np.testing.assert_array_equal(_loads(page).reshape(3, 16), expert_load(demo, tokens=slice(396, 459), segment="tool_call"))
    page.close()


def _panel(page, name):
    "Switch the side panel from the page's selector; the panel's numbers as the view keeps them."
    page.select_option(".cl-rx-panel-bar select", name)
    assert page.evaluate("window.state.panel") == name
    return page.evaluate("""(() => { const n = document.getElementById('w').__routingExplorer.ui.panelData;
      return Object.fromEntries(Object.entries(n).map(([k, v]) => [k, ArrayBuffer.isView(v) ? Array.from(v) : v])); })()""")


def _shot(page, name):
    shots = os.environ.get("EXPLORER_SHOTS")
    if shots: page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)


def test_panels_count_what_the_views_count(browser, site, demo):
    "Each side panel, counted in the browser, against cascade_lab.views on the same trace, layer and selection."
    page, el = _open(browser, site, RoutingExplorer(demo, detail="full", layer=1), "panels")
    n = _panel(page, "coactivation")
    np.testing.assert_array_equal(np.reshape(n["matrix"], (16, 16)), coactivation(demo, 1))
    _shot(page, "panel_coactivation")
    n = _panel(page, "transitions")
    np.testing.assert_array_equal(np.reshape(n["matrix"], (16, 16)), transitions(demo, 1))
    _shot(page, "panel_transitions")
    page.evaluate("window.fromPython('slot', 2)")                # the panel follows the slot
    n = page.evaluate("Array.from(document.getElementById('w').__routingExplorer.ui.panelData.matrix)")
    np.testing.assert_array_equal(np.reshape(n, (16, 16)), transitions(demo, 1, slot=2))
    n = _panel(page, "entropy")
    step = RoutingExplorer(demo).info["quant"]["rentropy"]["scale"]
    np.testing.assert_allclose(n["byLayer"], entropy_by_layer(demo), atol=step / 2)
    _shot(page, "panel_entropy")
    # a click on a load cell picks that layer and expert; the vocabulary lists what views.expert_vocabulary lists
    _panel(page, "load")
    box, cw, ch = page.locator(".cl-rx-load").bounding_box(), *page.evaluate(
        "(() => { const n = document.getElementById('w').__routingExplorer.ui.panelData; return [n.cw, n.ch]; })()")
    page.mouse.click(box["x"] + 1 + 7.5 * cw, box["y"] + 1 + 2.5 * ch)
    assert (page.evaluate("window.state.layer"), page.evaluate("window.state.expert")) == (2, 7)
    assert "layer 2" in page.locator(".cl-rx-load-hover").inner_text() or "expert 7" in page.locator(".cl-rx-load-hover").inner_text()
    n = _panel(page, "vocabulary")
    assert n["rows"] == expert_vocabulary(demo, 2, 7, top=20)
    rows = page.locator(".cl-rx-vocab tr").all_inner_texts()
    assert len(rows) == 21 and rows[1].split("\t")[1].strip() == str(n["rows"][0]["count"])
    _shot(page, "panel_vocabulary")
    # the selection narrows every panel: brush and filter from Python
    page.evaluate("window.fromPython('brush', [376, 459]); window.fromPython('segment', 'reasoning')")
    n = page.evaluate("document.getElementById('w').__routingExplorer.ui.panelData.rows")
    assert n == expert_vocabulary(demo, 2, 7, tokens=slice(376, 459), segment="reasoning")
    assert page.evaluate("window.errors") == []
    page.close()


def test_top1_panels_say_what_they_cannot_show(browser, site, demo):
    page, el = _open(browser, site, RoutingExplorer(demo, layer=2), "panels_top1")
    n = _panel(page, "coactivation")
    assert "detail=\"full\"" in n["empty"] and "detail" in page.locator(".cl-rx-balance").inner_text()
    n = _panel(page, "transitions")                            # layer 2 is the last MoE layer here
    assert "last MoE layer" in n["empty"]
    n = _panel(page, "vocabulary")                             # top-1 only: what the browser has
    r = demo.routing
    e = int(np.bincount(r.experts[r.recorded_mask(), 2, 0], minlength=16).argmax())
    assert n["expert"] == e and "top-1 only" in page.locator(".cl-rx-load-title").inner_text()
    top1 = [(t, c) for t, c in zip(demo.tokens, r.experts[:, 2, 0] == e)]
    counts = {}
    for (t, hit), rec in zip(top1, r.recorded_mask()):
        if rec: counts.setdefault(t, [0, 0]); counts[t][0] += hit; counts[t][1] += 1
    want = sorted(((-c, t, f) for t, (c, f) in counts.items() if c), key=lambda x: (x[0], x[1]))[:20]
    assert [(r_["token"], r_["count"], r_["frequency"]) for r_ in n["rows"]] == [(t, -c, f) for c, t, f in want]
    page.close()


@pytest.mark.parametrize("panel", ["entropy", "coactivation", "transitions", "vocabulary"])
def test_panels_at_32k(browser, site, big, panel):
    "Every panel at 32k tokens (full): drawn, and how long its counting and drawing took (data-load-ms)."
    page, el = _open(browser, site, RoutingExplorer(big, detail="full", panel=panel), f"big_{panel}")
    ms = float(el.get_attribute("data-load-ms"))
    if panel == "coactivation":
        n = page.evaluate("Array.from(document.getElementById('w').__routingExplorer.ui.panelData.matrix)")
        np.testing.assert_array_equal(np.reshape(n, (128, 128)), coactivation(big, 0))
    print(f"{panel} panel at 32k tokens (full): {ms:.1f} ms")
    if panel != "vocabulary":                                   # a drawn canvas, not blank
        px = page.evaluate("""(() => { const c = document.querySelector('.cl-rx-load');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
          for (let i = 0; i < d.length; i += 4) n += d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250; return n; })()""")
        assert px > 1000, px
    page.close()


def test_progressive_full_view(browser, site, demo):
    """A "full" view first gets the top-1 planes, draws them and asks for the rest; the rest arrives as one update
    and the view is rebuilt with every slot, keeping its layer, hover, brush and panel."""
    root, _ = site
    w = RoutingExplorer(demo, detail="full", slot=2)
    page, el = _open(browser, site, w, "progressive", complete=False)
    assert el.get_attribute("data-pending") == "full" and page.evaluate("window.sent") == [{"ask": "full"}]
    assert page.locator(".cl-rx-hover-table tr").nth(0).locator("td").count() == 1
    assert "on their way" in page.locator(".cl-rx-title").inner_text()
    page.evaluate("window.fromPython('layer', 1); window.fromPython('hover', 420); window.fromPython('brush', [380, 470])")
    page.select_option(".cl-rx-panel-bar select", "coactivation")
    assert "waiting for all k slots" in page.locator(".cl-rx-balance").inner_text()
    w._on_view_message(w, {"ask": "full"}, [])                  # what the kernel does with the view's message
    (root / "rest.json").write_text(json.dumps({n: w.info if n == "info" else {"b64": base64.b64encode(getattr(w, n)).decode()}
                                                for n in ("experts", "weights", "scores", "rentropy", "info")}))
    page.evaluate("window.update('rest.json')")
    page.wait_for_function("!document.getElementById('w').dataset.pending")
    cells = page.locator(".cl-rx-hover-table tr").nth(1).locator("td").all_inner_texts()
    assert [int(c.split()[0]) for c in cells] == demo.routing.experts[420, 1].tolist()      # every slot, same token
    assert page.locator(".cl-rx-field select >> nth=1").input_value() == "2"               # the slot asked for at first
    n = page.evaluate("Array.from(document.getElementById('w').__routingExplorer.ui.panelData.matrix)")
    np.testing.assert_array_equal(np.reshape(n, (16, 16)), coactivation(demo, 1, tokens=slice(380, 470)))
    assert page.evaluate("window.errors") == []
    page.close()
