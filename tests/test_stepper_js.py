"""The stepper widgets' front ends (`cascade_lab/js/tir_stepper.js`, `cascade_lab/js/thinking_viewer.js`) in a real
browser, without Jupyter: a page served on loopback imports the ES module and renders it with a fake anywidget
`model` (get / set / on / off / save_changes / send) holding the exact state Python computed for a trace
(`widget.get_state()`, binary traits as DataViews). Python playwright drives Debian's `/usr/bin/chromium` (no
browser download); every request off loopback is aborted and fails the test. Screenshots go to tests/artifacts/
(BROWSER_ARTIFACTS=DIR elsewhere).

The kernel side (`index` clamping, loads recomputed for another layer, links, live runs) is tested in
nbs/17_stepper.ipynb; here: what the browser draws and what it sends back."""
from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or ROOT / "tests" / "artifacts")


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found: install Debian's chromium (`sudo apt-get install chromium`; never `playwright install`)"
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "Python playwright is not installed (it is in the dev extra: pip install -e '.[dev]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")

PAGE = """<!doctype html><meta charset="utf-8"><title>harness</title>
<body style="margin:16px; width:900px"><div id="w"></div>
<script type="module">
const spec = await (await fetch("state.json")).json();
const decode = (v) => {
  if (!(v && typeof v === "object" && "__bytes__" in v)) return v;
  const bin = atob(v.__bytes__), u = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
  return new DataView(u.buffer);
};
class FakeModel {                      // the part of anywidget's model API the widgets use
  constructor(traits) {
    this.s = Object.fromEntries(Object.entries(traits).map(([k, v]) => [k, decode(v)]));
    this.handlers = {}; this.saves = 0; this.sent = [];
  }
  get(k) { return this.s[k]; }
  set(k, v) { this.s[k] = decode(v); for (const f of this.handlers["change:" + k] || []) f(); }
  on(names, f) { for (const n of names.split(/\\s+/)) (this.handlers[n] ||= []).push(f); }
  off(names, f) { for (const n of names.split(/\\s+/)) this.handlers[n] = (this.handlers[n] || []).filter((g) => g !== f); }
  save_changes() { this.saves++; }
  send(msg) { this.sent.push(msg); }
}
window.mod = await import("./" + spec.module);
window.model = new FakeModel(spec.traits);
window.cleanup = window.mod.default.render({ model: window.model, el: document.getElementById("w") });
</script>"""


def _state(widget) -> dict:
    "A widget's own synced traits, JSON-ready (bytes as {'__bytes__': base64})."
    skip = {"layout", "tabbable", "tooltip"}
    out = {}
    for k, v in widget.get_state().items():
        if k.startswith("_") or k in skip: continue
        out[k] = {"__bytes__": base64.b64encode(bytes(v)).decode()} if isinstance(v, (bytes, memoryview)) else v
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "A loopback HTTP server over a folder with the widgets' JS; `site.page(widget)` writes its page and returns the URL."
    root = tmp_path_factory.mktemp("harness")
    for f in ("tir_stepper.js", "thinking_viewer.js"): shutil.copy(ROOT / "cascade_lab" / "js" / f, root / f)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Site:
        n = 0
        def page(self, widget, module: str) -> str:
            Site.n += 1
            d = root / f"p{Site.n}"
            d.mkdir()
            for f in ("tir_stepper.js", "thinking_viewer.js"): shutil.copy(root / f, d / f)
            (d / "index.html").write_text(PAGE)
            (d / "state.json").write_text(json.dumps({"module": module, "traits": _state(widget)}))
            return f"http://127.0.0.1:{server.server_address[1]}/p{Site.n}/index.html"
    yield Site()
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def open_widget(browser, site, request):
    "open_widget(widget, module) -> page, with the widget rendered (data-ready); checks no request left loopback."
    ctx = browser.new_context(viewport={"width": 960, "height": 900})
    offsite, errors = [], []

    def route(r):
        if urlsplit(r.request.url).hostname in ("127.0.0.1", "localhost"): r.continue_()
        else: offsite.append(r.request.url); r.abort()
    ctx.route("**/*", route)

    def opener(widget, module):
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(site.page(widget, module))
        page.wait_for_selector('#w[data-ready="1"]', timeout=15_000)
        return page
    yield opener
    ctx.close()
    assert not offsite, f"requests off loopback: {offsite}"
    assert not errors, f"errors in the page: {errors}"


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"stepper-{name}.png"
    page.locator("#w").screenshot(path=str(path))
    print("screenshot:", path)
    return path


INK = """(sel) => { const c = document.querySelector(sel), d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let ink = 0, red = 0;
  for (let i = 0; i < d.length; i += 4) { if (d[i + 3] && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) ink++;
    if (d[i + 3] && d[i] > 190 && d[i + 1] < 60 && d[i + 2] < 60) red++; }
  return { ink, red, w: c.width, h: c.height }; }"""


@pytest.fixture(scope="module")
def traces():
    from cascade_lab.trace import Trace, synthetic_trace
    data = ROOT / "tests" / "data"
    return {"tir": Trace.load(data / "demo_tir_0.0.1.trace.safetensors"),
            "gen": Trace.load(data / "demo_generate_0.0.1.trace.safetensors"),
            "big": synthetic_trace(40_000, steps=1), "four": synthetic_trace(400, steps=4)}


# ---------------------------------------------------------------- TIRStepper

def test_tir_stepper_draws_a_step_and_navigates(open_widget, traces):
    from cascade_lab.stepper import TIRStepper
    page = open_widget(TIRStepper(traces["tir"]), "tir_stepper.js")
    assert page.inner_text(".ts-pos") == "step 1 / 2"
    assert "Emma" in page.inner_text(".ts-problem")
    code = page.locator("pre.ts-code")
    assert code.inner_text() == traces["tir"].steps[0].tool_calls[0]["arguments"]["code"]
    assert page.locator("pre.ts-code .num").all_inner_texts() == ["24", "3", "18"]
    assert page.locator("pre.ts-code .bi").all_inner_texts() == ["print"]
    assert page.inner_text("pre.ts-out") == "54"
    heat = page.evaluate(INK, "canvas.ts-heat")
    assert heat["ink"] > 0 and heat["h"] > 0
    shot(page, "tir-step1")
    page.click("button[title='next step']")
    assert page.evaluate("model.get('index')") == 1 and page.evaluate("model.saves") == 1
    assert page.inner_text(".ts-answer") == "The answer is \\boxed{54}."
    assert page.locator("button[title='next step']").is_disabled()
    page.click("button[title='first step']")
    assert page.evaluate("model.get('index')") == 0
    page.focus(".cl-ts")
    page.keyboard.press("End")
    assert page.evaluate("model.get('index')") == 1
    page.evaluate("model.set('index', 0)")                      # a change from the kernel redraws
    assert page.inner_text(".ts-pos") == "step 1 / 2"
    shot(page, "tir-step2-back")


def test_tir_stepper_plays_at_its_speed(open_widget, traces):
    from cascade_lab.stepper import TIRStepper
    page = open_widget(TIRStepper(traces["four"], speed=60), "tir_stepper.js")
    t0 = page.evaluate("performance.now()")
    page.click("button.ts-play")
    page.wait_for_function("!model.get('playing')", timeout=10_000)
    dt = page.evaluate("performance.now()") - t0
    assert page.evaluate("model.get('index')") == 3 and page.inner_text(".ts-pos") == "step 4 / 4"
    assert dt >= 3 * 60, dt                                      # three steps at 60 ms each, then it stops
    page.fill("input.ts-speed", "250")
    page.dispatch_event("input.ts-speed", "change")
    assert page.evaluate("model.get('speed')") == 250


def test_live_stepper_shows_text_output_and_stop(open_widget):
    from cascade_lab.parse import parse_output
    from cascade_lab.record import StepGenerated, TokenDelta, ToolOutput, ToolStarted
    from cascade_lab.stepper import TIRStepper
    w = TIRStepper()
    w._begin("What is 6 * 7?")
    w._on_event(TokenDelta(0, [1], "Let me compute"))
    w._push_live(force=True)
    page = open_widget(w, "tir_stepper.js")
    assert page.inner_text("pre.ts-live") == "Let me compute" and page.is_visible("button.stop")
    page.evaluate("model.set('live_text', 'Let me compute it with Python.')")
    assert page.inner_text("pre.ts-live") == "Let me compute it with Python."
    shot(page, "live-generating")
    text = "Let me compute.\n</think>\n<tool_call>\n<function=f>\n<parameter=code>\nprint(6 * 7)\n</parameter>\n</function>\n</tool_call>"
    for ev in (StepGenerated(0, None, parse_output(text)), ToolStarted(0, 0, "f", {"code": "print(6 * 7)"}), ToolOutput(0, 0, "4")):
        getattr(w, "_live_" + type(ev).__name__)(ev)
    w._push_live(force=True)
    page.evaluate(f"model.set('steps', {json.dumps(w.steps)}); model.set('live_output', {json.dumps(w.live_output)})")
    assert page.inner_text("pre.ts-out.running") == "4"
    page.evaluate("model.set('live_output', '42')")
    assert page.inner_text("pre.ts-out.running") == "42"
    shot(page, "live-tool-running")
    page.click("button.stop")
    assert page.evaluate("model.sent") == [{"type": "stop"}]


def test_python_highlighter(open_widget, traces):
    from cascade_lab.stepper import TIRStepper
    page = open_widget(TIRStepper(traces["tir"]), "tir_stepper.js")
    src = 'def f(x):  # add "one"\n    return x + 1.5e3 if x else \'a#b\'\n"""doc\nstring"""\nprint("<b>", 0x1F, rb"\\d")'
    spans = page.evaluate("""(src) => { const d = document.createElement("div"); d.innerHTML = mod.highlightPython(src);
        return { text: d.textContent, spans: [...d.querySelectorAll("span")].map((s) => [s.className, s.textContent]),
                 tags: d.querySelectorAll("b").length }; }""", src)
    assert spans["text"] == src and spans["tags"] == 0                      # exact text, nothing injected
    assert spans["spans"] == [["kw", "def"], ["com", '# add "one"'], ["kw", "return"], ["num", "1.5e3"], ["kw", "if"],
                              ["kw", "else"], ["str", "'a#b'"], ["str", '"""doc\nstring"""'], ["bi", "print"],
                              ["str", '"<b>"'], ["num", "0x1F"], ["str", 'rb"\\d"']]


# ---------------------------------------------------------------- ThinkingViewer

# the texts a thinking viewer highlights (CSS Custom Highlight API ranges, no nodes) inside the elements `sel`
HIGHLIGHTED = """(sel) => { const hl = CSS.highlights.get("cl-tv-mark"), inside = [...document.querySelectorAll(sel)];
  return [...hl].filter((r) => inside.some((e) => e.contains(r.startContainer))).map((r) => r.toString()); }"""


def test_thinking_viewer_on_a_long_run(open_widget, traces):
    from cascade_lab.stepper import ThinkingViewer
    v = ThinkingViewer(traces["big"])
    g0, g1, n = *v.span, len(v.steps)
    page = open_widget(v, "thinking_viewer.js")
    nodes = page.evaluate("document.querySelectorAll('#w *').length")
    assert g1 - g0 > 30_000 and n > 30 and nodes < 100, nodes             # not a node per token, nor per step
    strip = page.evaluate(INK, "canvas.tv-strip")
    assert strip["ink"] > 1000 and strip["red"] > 0, strip                 # bars, and the forking tokens in red
    assert page.locator(".tv-step").count() == 10 and f"steps 1–10 of {n}" in page.inner_text(".tv-pager")
    assert page.locator("button[title='previous 10 steps']").is_disabled()
    assert page.locator(".tv-text").count() == 0                           # texts are rendered when opened
    shot(page, "thinking-long")
    i = next(j for j, s in enumerate(v.steps) if len(s["marks"]) >= 2 and j >= 10)
    while not page.locator(f".tv-step[data-i='{i}']").count(): page.click("button[title='next 10 steps']")
    assert page.locator(".tv-step").count() == 10
    page.locator(f".tv-step[data-i='{i}']").click()                          # opens and selects it
    assert page.evaluate("[model.get('selected_step'), model.get('selected')]") == [i, [v.steps[i]["start"], v.steps[i]["end"]]]
    text = v.steps[i]["text"]
    assert page.inner_text(".tv-text") == text and page.locator(".tv-step.sel").get_attribute("data-i") == str(i)
    assert page.evaluate(HIGHLIGHTED, ".tv-text") == [text[a:b] for a, b in v.steps[i]["marks"]]   # every marker
    assert page.locator(".tv-text mark").count() == 0                       # ... and no node for them
    assert "top: expert" in page.inner_text(".tv-top")
    assert page.evaluate(INK, ".tv-routing canvas")["ink"] > 0
    shot(page, "thinking-selected")
    page.click("button[title='previous 10 steps']")                         # another page, and back: still open
    assert page.locator(".tv-text").count() == 0 and page.evaluate(HIGHLIGHTED, ".tv-text") == []
    page.click("button[title='next 10 steps']")
    assert page.inner_text(".tv-text") == text and len(page.evaluate(HIGHLIGHTED, ".tv-text")) == len(v.steps[i]["marks"])
    page.locator(f".tv-step[data-i='{i}']").press("Enter")                  # closed from the keyboard
    assert page.locator(".tv-text").count() == 0 and page.locator(f".tv-step[data-i='{i}']").get_attribute("aria-expanded") == "false"
    box = page.locator("canvas.tv-strip").bounding_box()
    k = n - 3                                                                # a click on the strip selects its step
    page.mouse.click(box["x"] + box["width"] * ((v.steps[k]["start"] + v.steps[k]["end"]) / 2 - g0) / (g1 - g0), box["y"] + 20)
    assert page.evaluate("[model.get('selected_step'), model.get('selected')]") == [k, [v.steps[k]["start"], v.steps[k]["end"]]]
    assert page.locator(".tv-step.sel").get_attribute("data-i") == str(k)   # ... its page shown
    assert f"steps {k // 10 * 10 + 1}–{min(n, k // 10 * 10 + 10)} of {n}" in page.inner_text(".tv-pager")
    page.mouse.move(box["x"] + 0.5, box["y"] + 20)                           # the hovered pixel column's top token
    t = int(page.inner_text(".tv-hover").split()[1])
    assert g0 <= t < g0 + 3 * (g1 - g0) / box["width"] + 1 and f"entropy {v.trace.entropies[t]:.3f}" in page.inner_text(".tv-hover")
    page.select_option(".tv-routing select", "2")
    assert page.evaluate("model.get('layer')") == 2


def test_thinking_viewer_header(open_widget, traces):
    from cascade_lab.stepper import ThinkingViewer
    page = open_widget(ThinkingViewer(traces["gen"]), "thinking_viewer.js")
    head = page.inner_text(".tv-meta")
    assert "thinking finished" in head and "answer 214" in head and "42 thinking tokens" in head
    page.locator(".tv-step").first.click()
    assert page.inner_text(".tv-text") == traces["gen"].steps[0].reasoning
    shot(page, "thinking-demo")


def test_thinking_viewer_without_the_highlight_api(browser, site, traces):
    "Where CSS.highlights is missing (Firefox < 140, Safari < 17.2), the markers are <mark> elements."
    from cascade_lab.stepper import ThinkingViewer
    v = ThinkingViewer(traces["big"])
    ctx = browser.new_context(viewport={"width": 960, "height": 900})
    try:
        ctx.add_init_script("Object.defineProperty(CSS, 'highlights', { value: undefined })")
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.page(v, "thinking_viewer.js"))
        page.wait_for_selector('#w[data-ready="1"]', timeout=15_000)
        opening = [j for j in range(10) if v.steps[j]["opens_with_marker"]]
        assert page.locator(".tv-step mark").count() == len(opening)          # the opening markers in the previews
        i = next(j for j in range(10) if len(v.steps[j]["marks"]) >= 2)
        page.locator(f".tv-step[data-i='{i}']").click()
        text = v.steps[i]["text"]
        assert page.locator(".tv-text mark").all_inner_texts() == [text[a:b] for a, b in v.steps[i]["marks"]]
        assert page.inner_text(".tv-text") == text and not errors, errors
    finally:
        ctx.close()
