"""The CompareView's JavaScript (cascade_lab/js/compare_view.js) in a real browser, without Jupyter.

A page on loopback imports the ES module as anywidget would and hands its `render` a stand-in for the widget model
(`get` / `set` / `save_changes` / `on` / `off` over the traits `pack_pair` produced, the binary ones as DataView at an
odd offset, as a comm message may hand them over). Headless Chromium (Debian's /usr/bin/chromium driven by Python
playwright) then hovers, zooms, pans, picks a layer and presses "go to first divergence", and the test checks what the
view shows against the numpy data (`views.compare`, the traces' own experts) and reads the timings the view reports
on its element. Every request off loopback is aborted and fails the test. Screenshots go to tests/artifacts/
(BROWSER_ARTIFACTS=DIR elsewhere). JupyterLab itself is tested in tests/test_lab_compare.py.

Skipped, saying why, when playwright or chromium is missing (`apt-get install -y chromium`).
"""
import base64
import copy
import functools
import http.server
import json
import os
import shutil
import statistics
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from cascade_lab.compare import CompareView
from cascade_lab.explorer import JS_DIR, RoutingExplorer
from cascade_lab.trace import synthetic_trace
from cascade_lab.views import compare

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")
GRID_LEFT = 60                      # compare_view.js: the plots start this many css px into the main canvas

try:
    from playwright.sync_api import sync_playwright
except ImportError:                                    # pragma: no cover
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}: apt-get install -y chromium"),
]

# The page renders one widget per entry of ?w=module:state,... into its own element (#w0, #w1, ...).
PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<link rel="stylesheet" href="compare_view.css"><link rel="stylesheet" href="routing_explorer.css">
<style>body{margin:0;width:1000px}</style></head><body>
<script type="module">
window.errors = [];
window.addEventListener("error", (e) => window.errors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.errors.push(String(e.reason)));
window.sets = []; window.saves = 0; window.fromPython = {}; window.states = [];
const specs = new URLSearchParams(location.search).get("w").split(",");
for (const [i, spec] of specs.entries()) {
  const [mod, file] = spec.split(":");
  const widget = (await import("./" + mod)).default;
  const raw = await (await fetch(file)).json(), state = {}, handlers = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v && v.b64 !== undefined) {
      const bin = atob(v.b64), u = new Uint8Array(bin.length + 3);
      for (let j = 0; j < bin.length; j++) u[j + 3] = bin.charCodeAt(j);
      state[k] = new DataView(u.buffer, 3, bin.length);
    } else state[k] = v;
  }
  const model = {
    get: (k) => state[k],
    set: (k, v) => { state[k] = v; window.sets.push([k, v]); },
    save_changes: () => { window.saves++; },
    on: (ev, f) => { (handlers[ev] ||= []).push(f); },
    off: (ev, f) => { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
  };
  // what a change made in Python looks like to the view
  window.fromPython[i] = (k, v) => { state[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); };
  window.states.push(state);
  const el = document.createElement("div"); el.id = "w" + i; document.body.appendChild(el);
  try { window["cleanup" + i] = await widget.render({ model, el }); } catch (e) { window.errors.push(String(e && e.stack || e)); }
}
window.done = true;
</script></body></html>"""


def _state(w) -> dict:
    "A widget's synced traits as JSON, the binary ones base64 (the page hands them to the view as DataView)."
    out = {}
    for k, v in w.get_state().items():
        out[k] = {"b64": base64.b64encode(bytes(v)).decode()} if isinstance(v, (bytes, memoryview)) else v
    return out


def rerouted(t, start: int, layer: int, text_from: int | None = None):
    "A copy of `t` with other experts in MoE `layer` from token `start` on (id + 1 mod E), another text from `text_from` on."
    u = copy.deepcopy(t)
    e = u.routing.experts
    e[start:, layer] = (e[start:, layer].astype(np.int64) + 1) % u.routing.num_experts
    if text_from is not None:
        u.token_ids[text_from:] += 1
        u.tokens[text_from:] = [s.upper() for s in u.tokens[text_from:]]
    return u


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "A loopback server over a folder with the page, both modules and their CSS; state files are added per test."
    root = tmp_path_factory.mktemp("compare")
    (root / "index.html").write_text(PAGE)
    for f in ("compare_view.js", "compare_view.css", "routing_explorer.js", "routing_explorer.css"): shutil.copy(JS_DIR / f, root / f)
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
def pair():
    "A 32k-token run of the real shape and a copy routed otherwise in MoE layer 3 from token 1000, with another text from 24000."
    a = synthetic_trace(32768)
    return a, rerouted(a, 1000, 3, text_from=24000)


@pytest.fixture(scope="module")
def view(pair):
    return CompareView(*pair, labels=("thinking", "instruct"))


@pytest.fixture
def opened(browser, site, request):
    """`opened(*widgets, name=...)`: a page showing the widgets, drawn. Requests off loopback are aborted and recorded,
    and fail the test at teardown; a screenshot of the page is saved then."""
    pages, off = [], []

    def block(route):
        off.append(route.request.url)
        route.abort()

    def open_(*widgets, name):
        root, url = site
        specs = []
        for i, w in enumerate(widgets):
            f = f"{name}_{i}.json"
            (root / f).write_text(json.dumps(_state(w)))
            specs.append(("compare_view.js" if isinstance(w, CompareView) else "routing_explorer.js") + ":" + f)
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        page.route(lambda u: (urlsplit(u).hostname or "127.0.0.1") not in ("127.0.0.1", "localhost", "::1"), block)
        page.on("console", lambda m: m.type == "error" and print("console:", m.text))
        page.goto(f"{url}/index.html?w={','.join(specs)}")
        page.wait_for_function(f"window.done && [...Array({len(widgets)}).keys()].every(i => document.getElementById('w' + i)"
                               ".dataset.ready === '1') || (window.errors || []).length", timeout=60000)
        assert page.evaluate("window.errors") == []
        pages.append((page, name))
        return page

    yield open_
    for page, name in pages:
        shot(page, f"{name}-end")
        assert page.evaluate("window.errors") == []
        page.close()
    assert not off, f"requests left loopback: {off}"


def shot(page, label: str, locator=None) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"compare_js-{label}.png"
    (locator or page).screenshot(path=str(path), **({} if locator else {"full_page": True}))
    print(f"\n[browser] screenshot {path}")
    return path


def geo(page, i=0) -> dict:
    return page.evaluate(f"(() => {{ const g = document.getElementById('w{i}').__compareView.geo; "
                         "return {aTop: g.aTop, bTop: g.bTop, stripTop: g.stripTop, rowH: g.rowH, gridH: g.gridH, plotW: g.plotW}; })()")


def point(page, t: float, part: str = "a", row: int = 0, i: int = 0) -> tuple[float, float]:
    "Page coordinates of token position `t` (fractional: its centre is t + 0.5) in grid `part` ('a', 'b', 'strip')."
    box, g = page.locator(f"#w{i} canvas.cl-cv-main").bounding_box(), geo(page, i)
    st = page.evaluate(f"(() => {{ const s = document.getElementById('w{i}').__compareView.st; return [s.start, s.end]; }})()")
    x = box["x"] + GRID_LEFT + (t - st[0]) / (st[1] - st[0]) * g["plotW"]
    y = box["y"] + ({"a": g["aTop"] + (row + 0.5) * g["rowH"], "b": g["bTop"] + (row + 0.5) * g["rowH"],
                     "strip": g["stripTop"] + 20}[part])
    return x, y


def ink(page, top: float, height: float, i: int = 0) -> int:
    "Pixels of the main canvas within css rows top..top+height that are neither transparent nor white."
    return page.evaluate(f"""(() => {{
      const c = document.querySelector('#w{i} canvas.cl-cv-main'), k = c.width / c.getBoundingClientRect().width;
      const d = c.getContext('2d').getImageData(0, Math.round({top} * k), c.width, Math.round({height} * k)).data;
      let n = 0;
      for (let j = 0; j < d.length; j += 4) if (d[j + 3] > 0 && (d[j] < 250 || d[j + 1] < 250 || d[j + 2] < 250)) n++;
      return n; }})()""")


def hover_rows(page) -> list[list[str]]:
    "The hover table's rows (one per MoE layer): [layer, A's experts, B's experts, Jaccard] as shown."
    return page.locator("#w0 .cl-cv-hover-table tr").evaluate_all(
        "rows => rows.slice(1).map(r => [...r.children].map(c => c.textContent))")


def timings(page, T: int, n: int = 15) -> tuple[list[float], list[float]]:
    """(full redraws, hovers) in ms as the view reports them. A redraw is forced by a window set as Python would set
    it, moving every column's tokens, so no cached pixels are reused; a hover moves the pointer over both grids.
    Three of each first, unmeasured: the JIT warms up on them."""
    el, redraw, hover = page.locator("#w0"), [], []
    for j in range(n + 3):
        page.evaluate(f"window.fromPython[0]('window', [{(j + 1) % 2}, {T - (j // 2) % 3}])")
        redraw.append(float(el.get_attribute("data-redraw-ms")))
    page.evaluate(f"window.fromPython[0]('window', [0, {T}])")
    for j, f in enumerate(np.linspace(0.03, 0.97, n + 3)):
        page.mouse.move(*point(page, f * T, "ab"[j % 2], row=5))
        hover.append(float(el.get_attribute("data-hover-ms")))
    return redraw[3:], hover[3:]


def timed(page, T: int, label: str) -> tuple[list[float], list[float]]:
    """`timings`, printed. The goals (redraw <= 16 ms, hover <= 2 ms) are judged by benchmarks/bench_widgets.py,
    not here: a timed assertion in a test fails on a busy machine and proves nothing on a fast one."""
    redraw, hover = timings(page, T)
    print(f"\nCompareView, 32k tokens x 23 layers, {label}: full redraw median {statistics.median(redraw):.2f} ms "
          f"(max {max(redraw):.2f}); hover median {statistics.median(hover):.2f} ms (max {max(hover):.2f})")
    return redraw, hover


def test_32k_pair_draws_within_a_frame_and_hovers_fast(opened, view, pair):
    page = opened(view, name="32k")
    g, T = geo(page), len(pair[0])
    # both grids and the strip are drawn (non-blank pixels in each band)
    for top, h in ((g["aTop"], g["gridH"]), (g["bTop"], g["gridH"]), (g["stripTop"], 40)):
        assert ink(page, top, h) > 0.5 * g["plotW"] * min(h, 40), (top, h)
    redraw, hover = timed(page, T, f"rerouted copy, {view.nbytes / 1e6:.2f} MB sent")
    assert len(redraw) and len(hover) and all(x > 0 for x in redraw + hover)      # the view measured itself
    shot(page, "32k-hovered", page.locator("#w0"))


def test_32k_unrelated_runs_draw_within_a_frame(opened, pair):
    "Two seeds: the texts part at once and no grid row is shared, so both grids are counted in full."
    other = synthetic_trace(32768, seed=1)
    view = CompareView(pair[0], other, labels=("seed 0", "seed 1"))
    page = opened(view, name="32k-seeds")
    redraw, hover = timed(page, len(other), f"two seeds, {view.nbytes / 1e6:.2f} MB sent")
    assert len(redraw) and len(hover) and all(x > 0 for x in redraw + hover)
    shot(page, "32k-seeds", page.locator("#w0"))


def test_hover_shows_both_runs(opened, view, pair):
    a, b = pair
    page = opened(view, name="hover")
    u = view.data()
    for t, part in ((1200, "b"), (1195, "a"), (995, "a"), (1000, "b")):
        page.evaluate(f"window.fromPython[0]('window', [{t - 10}, {t + 10}])")   # zoomed in: one token is ~45 px
        page.mouse.move(*point(page, t + 0.5, part, row=3))
        assert page.evaluate("window.states[0].hover") == t and ["hover", t] in page.evaluate("window.sets")
        head = page.locator("#w0 .cl-cv-hover-head").inner_text()
        assert head.startswith(f"token {t} · thinking {json.dumps(a.tokens[t])} · instruct {json.dumps(b.tokens[t])} · same token"), head
        rows = hover_rows(page)
        assert len(rows) == 23
        for l, (name, ea, eb, j) in enumerate(rows):
            assert name == f"L{a.routing.layers[l]}"
            assert int(ea) == a.routing.experts[t, l, 0] and int(eb) == b.routing.experts[t, l, 0], (t, l, ea, eb)
            assert float(j) == pytest.approx(u["jaccard"][t, l], abs=0.005), (t, l, j)
        assert (float(rows[3][3]) < 1) == (t >= 1000) and all(float(r[3]) == 1 for k, r in enumerate(rows) if k != 3)
    # past the common prefix: the texts differ, no Jaccard
    page.evaluate("window.fromPython[0]('window', [24990, 25010])")
    page.mouse.move(*point(page, 25000.5, "b", row=0))
    head = page.locator("#w0 .cl-cv-hover-head").inner_text()
    assert f"thinking {json.dumps(a.tokens[25000])} · instruct {json.dumps(b.tokens[25000])} · the texts differ" in head, head
    assert {r[3] for r in hover_rows(page)} == {"–"}
    text = page.locator("#w0 .cl-cv-caption").inner_text()
    assert "past it the texts differ and nothing is compared" in text
    shot(page, "hover-past-prefix", page.locator("#w0"))
    # the text strip's tokens hover too
    box = page.locator("#w0 canvas.cl-cv-text").bounding_box()
    page.mouse.move(box["x"] + GRID_LEFT + 3, box["y"] + 8)
    assert page.evaluate("window.states[0].hover") != 25000


def test_per_layer_numbers_match_views_compare(opened, view, pair):
    "The panel shows views.compare's numbers, and the browser's own means of the strip's Jaccard codes agree with them."
    page = opened(view, name="layers")
    cmp = compare(*pair)
    js = page.evaluate("""(() => { const d = document.getElementById('w0').__compareView.d, W = d.P + 1, n = d.cnt[d.P];
      return { P: d.P, n, jac: Array.from({length: d.L}, (_, l) => d.cum[l * W + d.P] / n), panel: d.info.per_layer }; })()""")
    assert js["P"] == cmp["prefix"] == 24000 and js["n"] == cmp["compared"]
    np.testing.assert_allclose(js["jac"], cmp["jaccard"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(js["panel"]["jaccard"], cmp["jaccard"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(js["panel"]["top1_agreement"], cmp["top1_agreement"], rtol=0, atol=1e-15)
    # top-1 agreement from the top-1 planes the browser holds
    top1 = page.evaluate("""(() => { const d = document.getElementById('w0').__compareView.d, [A, B] = d.runs, out = [];
      for (let l = 0; l < d.L; l++) { let s = 0;
        for (let t = 0; t < d.P; t++) if (A.recorded[t] && B.recorded[t]) s += A.experts[l * A.T + t] === B.experts[l * B.T + t];
        out.push(s / d.cnt[d.P]); }
      return out; })()""")
    np.testing.assert_allclose(top1, cmp["top1_agreement"], rtol=0, atol=1e-12)
    title = page.locator("#w0 .cl-cv-layers-title").inner_text()
    assert "24,000-token common prefix" in title, title


def test_divergence_button_and_markers(opened, view):
    page = opened(view, name="jump")
    el = page.locator("#w0")
    g = geo(page)
    # the markers, zoomed out: the red line of the first routing divergence (token 1000) crosses grid A
    x = round(GRID_LEFT + 1000 / 32768 * g["plotW"])             # the line is 2 px wide, on whole pixels
    red = page.evaluate(f"""(() => {{ const c = document.querySelector('#w0 canvas.cl-cv-main'), k = c.width / c.getBoundingClientRect().width;
      return Array.from(c.getContext('2d').getImageData(Math.round({x - 1} * k), Math.round({g['aTop'] + 2} * k), 2, 1).data); }})()""")
    assert all(p[0] > 150 and p[1] < 80 and p[2] < 80 for p in (red[:4], red[4:])), red
    # the strip's top line: dark red over tokens whose expert set differs in some layer (1000..24000), blank before
    line = lambda t: page.evaluate(f"""(() => {{ const c = document.querySelector('#w0 canvas.cl-cv-main'), k = c.width / c.getBoundingClientRect().width;
      return Array.from(c.getContext('2d').getImageData(Math.round({GRID_LEFT + t / 32768 * g['plotW']} * k), Math.round({g['stripTop'] + 2} * k), 1, 1).data); }})()""")  # noqa: E731
    assert line(500)[:3] == [255, 255, 255] and line(5000)[:3] == [140, 0, 0] and line(20000)[:3] == [140, 0, 0], (line(500), line(5000))
    page.locator("#w0 button", has_text="go to first divergence").click()
    start, end = page.evaluate("window.states[0].window")
    assert start <= 1000 < end and end - start <= 64, (start, end)
    assert page.evaluate("window.states[0].hover") == 1000
    assert ["window", [start, end]] in page.evaluate("window.sets")
    assert page.locator("#w0 .cl-cv-hover-head").inner_text().startswith("token 1000 ")
    assert float(el.get_attribute("data-redraw-ms")) > 0
    shot(page, "jumped", el)
    # a pair whose routing agrees: the button goes where the texts part; a pair that agrees in both: disabled
    same = CompareView(*[synthetic_trace(300)] * 2)
    text_only = CompareView(synthetic_trace(300), rerouted(synthetic_trace(300), 300, 0, text_from=120))
    page2 = opened(same, text_only, name="jump-others")
    assert page2.locator("#w0 button", has_text="go to first divergence").is_disabled()
    page2.locator("#w1 button", has_text="go to first divergence").click()
    assert page2.evaluate("window.states[1].hover") == 120


def test_layer_choice_redraws(opened, view):
    page = opened(view, name="layer")
    el = page.locator("#w0")
    canvas = page.locator("#w0 canvas.cl-cv-main")
    url = lambda: canvas.evaluate("c => c.toDataURL()")            # noqa: E731
    before = url()
    page.select_option("#w0 .cl-cv-field select", "3")
    assert page.evaluate("window.states[0].layer") == 3 and ["layer", 3] in page.evaluate("window.sets")
    assert url() != before                                         # the strip now follows layer 3, the row is outlined
    assert page.locator("#w0 .cl-cv-hover-table tr.cl-cv-sel th").inner_text() == "L8"
    assert "MoE layer 8" in page.locator("#w0 .cl-cv-caption").inner_text()
    shot(page, "layer3", el)
    # from Python: the select follows; -1 is the mean again
    page.evaluate("window.fromPython[0]('layer', -1)")
    assert page.locator("#w0 .cl-cv-field select").input_value() == "-1"
    assert url() == before
    # a click on a row of the per-layer panel chooses that layer, a second click goes back to the mean
    box = page.locator("#w0 canvas.cl-cv-layers").bounding_box()
    page.mouse.click(box["x"] + 100, box["y"] + 14 + 5.5 * 13)
    assert page.evaluate("window.states[0].layer") == 5
    page.mouse.click(box["x"] + 100, box["y"] + 14 + 5.5 * 13)
    assert page.evaluate("window.states[0].layer") == -1


def test_zoom_to_a_few_tokens_and_pan(opened, view):
    page = opened(view, name="zoom")
    x, y = point(page, 16384, "a", row=2)
    page.mouse.move(x, y)
    for _ in range(40): page.mouse.wheel(0, -400)
    page.wait_for_timeout(400)                                    # the window goes to Python once the wheel settles
    start, end = page.evaluate("window.states[0].window")
    assert end - start <= 8 and abs((start + end) / 2 - 16384) < 200, (start, end)
    page.mouse.move(x, y); page.mouse.down(); page.mouse.move(x - 300, y, steps=5); page.mouse.up()
    page.wait_for_timeout(400)
    s2, e2 = page.evaluate("window.states[0].window")
    assert s2 > start and abs((e2 - s2) - (end - start)) <= 1
    shot(page, "zoomed", page.locator("#w0"))
    page.locator("#w0 button", has_text="zoom out").click()
    page.wait_for_timeout(400)
    assert page.evaluate("window.states[0].window") == [0, 32768]


def test_dom_does_not_grow_with_tokens(opened, view):
    small = synthetic_trace(300)
    page = opened(view, CompareView(small, rerouted(small, 100, 3, text_from=200), labels=("thinking", "instruct")), name="dom")
    n = page.evaluate("[0, 1].map(i => document.getElementById('w' + i).querySelectorAll('*').length)")
    print(f"\nDOM nodes: {n[0]} at 32k tokens, {n[1]} at 300")
    assert n[0] == n[1], n


def test_palette_is_the_explorers(opened, pair):
    "An expert has the same colour in both widgets (the palette is the same formula in both modules)."
    small = synthetic_trace(200)
    page = opened(CompareView(small, small), RoutingExplorer(small), name="palette")
    cv, rx = page.evaluate("[document.getElementById('w0').__compareView.pal, document.getElementById('w1').__routingExplorer.pal]")
    assert cv == rx and len(cv) == 128


def test_cleanup_lets_go(opened, view):
    page = opened(view, name="cleanup")
    page.evaluate("window.cleanup0()")
    before = page.evaluate("window.states[0].hover")
    page.mouse.move(*point(page, 5000, "a"))
    assert page.evaluate("window.states[0].hover") == before
