#!/usr/bin/env python
"""Benchmark of the notebook widgets: RoutingExplorer (detail "top1" and "full"), ThinkingViewer, TIRStepper,
CompareView (a trace and a copy whose routing is changed from a third of the way in), show().

Every figure of the widgets' goals, each printed with its goal and PASS or FAIL, on `synthetic_trace(32768)` (the
real shape: 23 MoE layers, top-6 of 128 experts), on the demo traces in tests/data/ and (unless --quick) on a demo
TIR trace generated now by the embedded demo model (about 15 s):

- build time: the widget's constructor, median and max of --runs (goal <= 0.2 s for each widget); the time to
  serialise its state (what opening the comm adds in a kernel) is shown beside it;
- bytes sent to the browser: every synced trait but `_esm`/`_css` (binary traits: their length; the others: their
  JSON, as the kernel sends it), summed over the widget's models (its Layout, a container's children); goals:
  RoutingExplorer top1 (the overview) <= 2 MB, full (top-6) <= 10 MB (MB = 10^6 bytes); `_esm` + `_css` apart;
- in the browser (headless Debian chromium through playwright; skipped, saying why, without them), on a loopback
  page that renders each widget's ES module with a stand-in anywidget model (as tests/test_explorer_js.py does):
  hover <= 2 ms of JavaScript (`data-hover-ms` over --hovers grid positions) and full redraw <= 16 ms
  (`data-redraw-ms` over --redraws zoom/pan redraws by wheel and drag, the 32k grid zoomed out), median and max;
  DOM nodes (elements and text) inside each widget's element at 32,768 and at 300 tokens: nothing may grow with
  the tokens (goal: about equal, within 10 % + 10 nodes; the growth per 100 tokens is printed too);
- visible in JupyterLab <= 0.5 s after the cell runs: a real JupyterLab server (tests/browser.py's harness), the
  32k trace made in a first cell; then for each widget cell, the time from Lab's run-cell command to the widget's
  element having `data-ready="1"` (the first run, then --lab-runs more; the verdict is on their median). The
  full explorer is progressive (its top-1 planes first, the rest when the view asks): the time until every slot
  is in and drawn (`data-pending` gone) is printed beside it.

    python benchmarks/bench_widgets.py                 # everything (about a minute on 2 cores)
    python benchmarks/bench_widgets.py --quick         # fewer runs, no fresh demo trace (CI)
    python benchmarks/bench_widgets.py --no-browser    # the Python figures only

It reports: the exit status is 0 whether or not the goals are met, 1 only when something breaks (an exception,
a page error in the browser, a request off loopback).
"""
from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
MB = 1e6
GOALS = {"build_s": 0.2, "top1_mb": 2.0, "full_mb": 10.0, "lab_s": 0.5, "hover_ms": 2.0, "redraw_ms": 16.0}
BIG, SMALL = "synthetic_trace({})", "synthetic_trace(300)"      # the labels of the two synthetic traces
WIDGETS = ("RoutingExplorer top1", "RoutingExplorer full", "ThinkingViewer", "TIRStepper", "CompareView")
_PARTNERS = {}      # id(trace) -> its rerouted copy: CompareView's second run, made once, outside the timings


def partner(tr):
    """`tr` with its routing changed from a third of the way in, in MoE layer 3 (or the last), every expert id
    shifted by one: a pair whose texts agree and whose routing diverges, for CompareView."""
    import copy
    if id(tr) not in _PARTNERS:
        t2 = copy.deepcopy(tr)
        r = t2.routing
        if r is not None:
            l = min(3, len(r.layers) - 1)
            r.experts[len(tr) // 3:, l] = (r.experts[len(tr) // 3:, l] + 1) % r.num_experts
        _PARTNERS[id(tr)] = (tr, t2)                               # tr kept alive, so its id is not reused
    return _PARTNERS[id(tr)][1]


class Report:
    "Every goal line printed, kept for the summary."

    def __init__(self): self.goals, self.errors = [], []

    def goal(self, what: str, measured: str, goal: str, ok: bool, over: str = ""):
        self.goals.append((what, measured, goal, ok, over))
        print(f"{'PASS' if ok else 'FAIL'}  {what}: {measured} (goal {goal})")

    def error(self, what: str):
        self.errors.append(what)
        print(f"ERROR {what}")

    def summary(self):
        failed = [g for g in self.goals if not g[3]]
        print(f"\n== summary: {len(self.goals) - len(failed)} of {len(self.goals)} goals met"
              + (f"; {len(self.errors)} error(s)" if self.errors else ""))
        for what, measured, goal, _, over in failed: print(f"FAIL  {what}: {measured} (goal {goal}){': ' + over if over else ''}")
        for e in self.errors: print(f"ERROR {e}")


def _over(v: float, goal: float, unit: str) -> str:
    return f"{v - goal:.3g} {unit} over, {v / goal:.2f}x the goal" if v > goal else ""


# ---------------------------------------------------------------- traces and widgets

def fresh_demo_trace():
    "A tool-integrated run of the embedded demo model, made now (the quickstart's problem): (trace, seconds)."
    import random
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error(); hf_logging.disable_progress_bar()
    from cascade_lab.demo import SEEDS, make_problem
    from cascade_lab.model import load_model
    from cascade_lab.tir import solve
    t = time.perf_counter()
    model, tok = load_model()
    problem = make_problem(random.Random(SEEDS["eval"] + 7))
    tr = solve(problem.question, model=model, tokenizer=tok, greedy=True, max_steps=3, max_new_tokens=160,
               reference=problem.answer)
    return tr, time.perf_counter() - t


def load_traces(a, report: Report) -> dict:
    "{label: Trace}: the synthetic 32k and 300-token traces, the demo traces of tests/data, a fresh demo TIR run."
    from cascade_lab.trace import Trace, synthetic_trace
    t = time.perf_counter()
    traces = {BIG.format(a.tokens): synthetic_trace(a.tokens), SMALL: synthetic_trace(300)}
    print(f"synthetic traces made in {time.perf_counter() - t:.1f} s (not timed below)")
    for f in sorted(DATA.glob("*.trace.safetensors")):
        tr = Trace.load(f)
        traces[f"{f.name.split('.trace')[0]} ({len(tr)} tokens)"] = tr
    if a.fresh:
        try:
            tr, secs = fresh_demo_trace()
            traces[f"fresh demo TIR ({len(tr)} tokens)"] = tr
            print(f"fresh demo TIR trace: {len(tr)} tokens, {len(tr.steps)} steps, answer {tr.answer}, made in {secs:.1f} s")
        except Exception as e:                                    # the rest of the benchmark still runs
            traceback.print_exc()
            report.error(f"generating the fresh demo TIR trace: {type(e).__name__}: {e}")
    return traces


def makers() -> dict:
    "{widget label: function(trace) -> widget} for the four widgets, and show()."
    from cascade_lab.explorer import RoutingExplorer
    from cascade_lab.stepper import ThinkingViewer, TIRStepper, show
    from cascade_lab.compare import CompareView
    return {"RoutingExplorer top1": lambda tr: RoutingExplorer(tr, detail="top1"),
            "RoutingExplorer full": lambda tr: RoutingExplorer(tr, detail="full"),
            "ThinkingViewer": ThinkingViewer, "TIRStepper": TIRStepper,
            "CompareView": lambda tr: CompareView(tr, partner(tr)), "show(trace)": show}


def models(w) -> list:
    "The widget models a widget sends: itself, its Layout, a container's children (recursively)."
    import ipywidgets
    out, todo = [], [w]
    while todo:
        m = todo.pop()
        if not isinstance(m, ipywidgets.Widget) or any(m is o for o in out): continue
        out.append(m)
        todo += [getattr(m, "layout", None), getattr(m, "style", None), *getattr(m, "children", ())]
    return out


def payload(w) -> dict:
    """Bytes sent to the browser to open widget `w`: 'binary' (buffers), 'json' (the other synced traits as the
    kernel serialises them), 'esm' (`_esm` + `_css`), and 'traits' {name: bytes} of its own model."""
    from ipywidgets.widgets.widget import _remove_buffers
    out = {"binary": 0, "json": 0, "esm": 0, "traits": {}}
    for m in models(w):
        state, _, buffers = _remove_buffers(m.get_state())
        code = {k: state.pop(k) for k in ("_esm", "_css") if k in state}
        out["esm"] += sum(len(str(v).encode()) for v in code.values())
        out["binary"] += sum(len(b) for b in buffers)
        out["json"] += len(json.dumps(state, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        if m is w:
            full = m.get_state()
            out["traits"] = {k: len(v) if isinstance(v, (bytes, memoryview)) else len(json.dumps(v, ensure_ascii=False).encode())
                             for k, v in full.items() if k not in ("_esm", "_css")}
    out["total"] = out["binary"] + out["json"]
    return out


def build_times(make, tr, runs: int) -> tuple[list[float], float, object]:
    "Constructor seconds over `runs` builds (after one untimed), the seconds to serialise the last one's state, and that widget."
    from ipywidgets.widgets.widget import _remove_buffers
    times, w = [], make(tr)                                        # a first build, not timed (first calls, caches)
    for _ in range(runs):
        if w is not None: w.close()
        t = time.perf_counter()
        w = make(tr)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    for m in models(w):
        state, _, _ = _remove_buffers(m.get_state())
        json.dumps(state, ensure_ascii=False)
    return times, time.perf_counter() - t, w


# ---------------------------------------------------------------- the Python figures

def python_figures(a, traces: dict, report: Report) -> None:
    mk = makers()
    rows = []
    print(f"\n== build time: the constructor, median and max of {a.runs} builds; + serialise: the state's JSON and "
          f"buffers (a kernel does it when the comm opens)")
    for label, tr in traces.items():
        if label == SMALL: continue                      # only there for the DOM counts
        for name, make in mk.items():
            try: times, ser, w = build_times(make, tr, a.runs)
            except ValueError as e:                                # a trace this widget cannot show
                print(f"n/a   {name} on {label}: {e}")
                continue
            med, mx = statistics.median(times), max(times)
            what = f"build {name:<20} {label}"
            measured = f"{med:.3f} s median, {mx:.3f} s max, + serialise {ser:.3f} s"
            if name in WIDGETS: report.goal(what, measured, f"<= {GOALS['build_s']} s", med <= GOALS["build_s"], _over(med, GOALS["build_s"], "s"))
            else: print(f"INFO  {what}: {measured} (all its widgets; no goal of its own)")
            if name == "RoutingExplorer full":                     # progressive: top-1 first, the rest when the view asks
                first = payload(w)["total"]
                t = time.perf_counter(); w.complete(); rest = time.perf_counter() - t
                print(f"INFO  {name} on {label}: progressive, {first / MB:.3f} MB sent first; the rest packed in {rest:.3f} s "
                      f"when the view asks (the bytes below are the total)")
            rows.append((label, name, payload(w)))
            w.close()
    payload_lines(rows, report)


def payload_lines(rows, report: Report) -> None:
    print("\n== bytes sent to the browser: synced traits but _esm/_css (binary: length; others: JSON), over the "
          "widget's models; MB = 10^6 bytes")
    goal = {"RoutingExplorer top1": GOALS["top1_mb"], "RoutingExplorer full": GOALS["full_mb"], "CompareView": GOALS["top1_mb"]}
    for label, name, p in rows:
        what = f"bytes {name:<20} {label}"
        measured = (f"{p['total'] / MB:.3f} MB (binary {p['binary'] / MB:.3f} MB, JSON {p['json'] / MB:.3f} MB); "
                    f"_esm + _css {p['esm'] / 1e3:.1f} kB apart")
        if name in goal: report.goal(what, measured, f"<= {goal[name]:g} MB", p["total"] / MB <= goal[name], _over(p["total"] / MB, goal[name], "MB"))
        else: print(f"INFO  {what}: {measured} (no goal)")
    for label, name, p in rows:
        if label.startswith("synthetic") and name != "show(trace)":
            big = sorted(p["traits"].items(), key=lambda kv: -kv[1])[:7]
            print(f"      {name} on {label}, largest traits: " + ", ".join(f"{k} {v / 1e3:,.1f} kB" for k, v in big))


# ---------------------------------------------------------------- the loopback page (no Jupyter)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<style>body{margin:0;width:1000px;font-family:sans-serif}</style></head><body><div id="w"></div>
<script type="module">
window.errors = [];
addEventListener("error", (e) => window.errors.push(String(e.message)));
addEventListener("unhandledrejection", (e) => window.errors.push(String(e.reason)));
const spec = await (await fetch(new URLSearchParams(location.search).get("case") + ".json")).json();
if (spec.css) { const s = document.createElement("style"); s.textContent = spec.css; document.head.append(s); }
const state = {}, handlers = {};
for (const [k, v] of Object.entries(spec.traits)) {
  if (v && v.b64 !== undefined) {                 // bytes as a DataView at an odd offset, as a message's buffers may be
    const bin = atob(v.b64), u = new Uint8Array(bin.length + 3);
    for (let i = 0; i < bin.length; i++) u[i + 3] = bin.charCodeAt(i);
    state[k] = new DataView(u.buffer, 3, bin.length);
  } else state[k] = v;
}
// anywidget's model, as far as the widgets use it; a change made by the view does not call the view back
const model = {
  get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes: () => {}, send: () => {},
  on: (names, f) => { for (const n of names.split(/\\s+/)) (handlers[n] ||= []).push(f); },
  off: (names, f) => { for (const n of names.split(/\\s+/)) handlers[n] = (handlers[n] || []).filter((g) => g !== f); },
};
window.fromPython = (k, v) => { state[k] = v; (handlers["change:" + k] || []).forEach((f) => f()); };
window.countNodes = () => { const w = document.createTreeWalker(document.getElementById("w"), NodeFilter.SHOW_ALL);
  let all = 0, elements = 0; while (w.nextNode()) { all++; if (w.currentNode.nodeType === 1) elements++; }
  return { all, elements }; };
const mod = await import("./" + spec.module);
try { window.cleanup = await mod.default.render({ model, el: document.getElementById("w") }); }
catch (e) { window.errors.push(String(e && e.stack || e)); }
</script></body></html>"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


class Harness:
    "A loopback HTTP server over a temporary folder with the widgets' JavaScript; `open(widget)` renders one."

    def __init__(self, browser):
        from cascade_lab.explorer import JS_DIR
        self.dir = tempfile.TemporaryDirectory(prefix="bench-widgets-")
        self.root = Path(self.dir.name)
        (self.root / "index.html").write_text(PAGE)
        for f in JS_DIR.glob("*.js"): (self.root / f.name).write_bytes(f.read_bytes())
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(self.root)))
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.ctx = browser.new_context(viewport={"width": 1000, "height": 1000})
        self.off_loopback, self.page_errors, self.n = [], [], 0
        self.ctx.route(lambda url: not _loopback(url), lambda r: (self.off_loopback.append(r.request.url), r.abort()))

    def open(self, widget):
        "A page showing `widget` (drawn: data-ready='1'); a progressive explorer with all its planes, as once asked."
        if hasattr(widget, "complete"): widget.complete()
        self.n += 1
        traits = {k: {"b64": base64.b64encode(bytes(v)).decode()} if isinstance(v, (bytes, memoryview)) else v
                  for k, v in widget.get_state().items() if not k.startswith("_") and k not in ("layout", "tabbable", "tooltip")}
        state = widget.get_state()
        spec = {"module": _module_file(state["_esm"]), "css": state.get("_css") or "", "traits": traits}
        (self.root / f"c{self.n}.json").write_text(json.dumps(spec))
        page = self.ctx.new_page()
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{self.srv.server_address[1]}/index.html?case=c{self.n}")
        page.wait_for_function("document.getElementById('w').dataset.ready === '1' || window.errors.length", timeout=60_000)
        errs = page.evaluate("window.errors")
        if errs: raise RuntimeError(f"{type(widget).__name__} failed in the page: {errs}")
        return page

    def close(self):
        self.ctx.close()
        self.srv.shutdown()
        self.dir.cleanup()


def _module_file(esm: str) -> str:
    "The file name, in cascade_lab/js/, of the ES module whose text a widget's `_esm` trait holds."
    from cascade_lab.explorer import JS_DIR
    for f in JS_DIR.glob("*.js"):
        if f.read_text() == esm: return f.name
    raise LookupError(f"a widget's _esm is none of {JS_DIR}/*.js")


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit
    p = urlsplit(url)
    return p.scheme not in ("http", "https", "ws", "wss", "ftp") or (p.hostname or "") in ("127.0.0.1", "localhost", "::1")


def _frames(page, n: int = 2):
    page.evaluate(f"new Promise((r) => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def _grid_point(page, frac: float, row: int = 3) -> tuple[float, float]:
    "Page coordinates `frac` across the explorer's grid, in MoE layer row `row`."
    box = page.locator(".cl-rx-grid").bounding_box()
    top, row_h, plot_w = page.evaluate("(() => { const g = document.getElementById('w').__routingExplorer.geo; return [g.top, g.rowH, g.plotW]; })()")
    return box["x"] + 44 + frac * plot_w, box["y"] + top + (row + 0.5) * row_h


def hover_ms(page, n: int) -> list[float]:
    "data-hover-ms of `n` hovers at distinct tokens across the zoomed-out grid."
    import numpy as np
    out = []
    for f in np.linspace(0.02, 0.98, n):
        page.evaluate("document.getElementById('w').dataset.hoverMs = ''")
        page.mouse.move(*_grid_point(page, float(f)))
        v = page.evaluate("document.getElementById('w').dataset.hoverMs")
        if v: out.append(float(v))
    return out


def zoom_pan_ms(page, n: int) -> list[float]:
    """data-redraw-ms of `n` redraws by the mouse near fully zoomed out: wheel in (a 6 % smaller window), drag
    right, drag left, wheel out, again; each moves the window, so no cached grid is reused."""
    x, y = _grid_point(page, 0.5)
    page.mouse.move(x, y)
    out = []
    for i in range(n):
        _frames(page)
        page.evaluate("document.getElementById('w').dataset.redrawMs = ''")
        step = i % 4
        if step in (0, 3): page.mouse.wheel(0, -40 if step == 0 else 400)
        else:
            page.mouse.down()
            page.mouse.move(x + (30 if step == 1 else -30), y)
        page.wait_for_function("document.getElementById('w').dataset.redrawMs !== ''", timeout=10_000)
        out.append(float(page.evaluate("document.getElementById('w').dataset.redrawMs")))
        if step in (1, 2): page.mouse.up(); page.mouse.move(x, y)
    return out


def python_window_ms(page, n: int, T: int) -> list[float]:
    "data-redraw-ms of `n` redraws forced by a window set from Python that shifts every column's tokens."
    out = []
    for i in range(n):
        page.evaluate(f"window.fromPython('window', [{i % 2}, {T - (i // 2) % 3}])")
        out.append(float(page.evaluate("document.getElementById('w').dataset.redrawMs")))
    return out


def interaction_figures(a, harness: Harness, big, report: Report) -> None:
    from cascade_lab.explorer import RoutingExplorer
    T = len(big)
    print(f"\n== explorer JavaScript at {T:,} tokens, zoomed out (loopback page, headless chromium, 1000 px wide)")
    for detail in ("top1", "full"):
        page = harness.open(RoutingExplorer(big, detail=detail))
        load0 = page.evaluate("document.getElementById('w').dataset.loadMs")
        h = hover_ms(page, a.hovers)
        r = zoom_pan_ms(page, a.redraws)
        p = python_window_ms(page, a.redraws, T)
        med = lambda xs: statistics.median(xs) if xs else float("nan")
        report.goal(f"hover {detail}: data-hover-ms over {len(h)} positions", f"median {med(h):.2f} ms, max {max(h):.2f} ms",
                    f"<= {GOALS['hover_ms']:g} ms, on the median", med(h) <= GOALS["hover_ms"], _over(med(h), GOALS["hover_ms"], "ms"))
        report.goal(f"redraw {detail}: data-redraw-ms over {len(r)} zoom/pan redraws (wheel, drag)",
                    f"median {med(r):.2f} ms, max {max(r):.2f} ms, {sum(x > GOALS['redraw_ms'] for x in r)} over 16 ms",
                    f"<= {GOALS['redraw_ms']:g} ms, on the median", med(r) <= GOALS["redraw_ms"], _over(med(r), GOALS["redraw_ms"], "ms"))
        print(f"INFO  redraw {detail}: {len(p)} windows set from Python (nothing cached): median {med(p):.2f} ms, "
              f"max {max(p):.2f} ms; load heatmap at first draw (data-load-ms) {load0} ms")
        page.close()


def _compare_point(page, frac: float, row: int = 3) -> tuple[float, float]:
    "Page coordinates `frac` across CompareView's grid of run A, in MoE layer row `row`."
    box = page.locator(".cl-cv-main").bounding_box()
    top, row_h, plot_w = page.evaluate("(() => { const g = document.getElementById('w').__compareView.geo; return [g.aTop, g.rowH, g.plotW]; })()")
    return box["x"] + 44 + frac * plot_w, box["y"] + top + (row + 0.5) * row_h


def compare_figures(a, harness: Harness, big, report: Report) -> None:
    import numpy as np
    from cascade_lab.compare import CompareView
    T = len(big)
    print(f"\n== CompareView JavaScript, {T:,} tokens and a rerouted copy, zoomed out")
    page = harness.open(CompareView(big, partner(big)))
    h = []
    for f in np.linspace(0.02, 0.98, a.hovers):
        page.evaluate("document.getElementById('w').dataset.hoverMs = ''")
        page.mouse.move(*_compare_point(page, float(f)))
        v = page.evaluate("document.getElementById('w').dataset.hoverMs")
        if v: h.append(float(v))
    r = python_window_ms(page, a.redraws, T)
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    report.goal(f"hover CompareView: data-hover-ms over {len(h)} positions", f"median {med(h):.2f} ms, max {max(h):.2f} ms",
                f"<= {GOALS['hover_ms']:g} ms, on the median", med(h) <= GOALS["hover_ms"], _over(med(h), GOALS["hover_ms"], "ms"))
    report.goal(f"redraw CompareView: data-redraw-ms over {len(r)} windows set from Python (nothing cached)",
                f"median {med(r):.2f} ms, max {max(r):.2f} ms", f"<= {GOALS['redraw_ms']:g} ms, on the median",
                med(r) <= GOALS["redraw_ms"], _over(med(r), GOALS["redraw_ms"], "ms"))
    page.close()


def dom_figures(harness: Harness, big, small, report: Report) -> None:
    mk = makers()
    print(f"\n== DOM nodes (elements + text) inside each widget's element, at {len(big):,} and at {len(small):,} tokens")
    cases = [(name, None) for name in WIDGETS] + [("RoutingExplorer full", "hovered"), ("ThinkingViewer", "longest step open")]
    for name, action in cases:
        counts, n_steps = [], []
        for tr in (big, small):
            w = mk[name](tr)
            n_steps.append(len(getattr(w, "steps", ())))
            page = harness.open(w)
            if action == "hovered": page.mouse.move(*_grid_point(page, 0.5))
            if action == "longest step open":
                i = max(range(len(w.steps)), key=lambda j: w.steps[j]["end"] - w.steps[j]["start"])
                row = page.locator(f".tv-step[data-i='{i}']")
                while not row.count(): page.locator(".tv-pager button").nth(1).click()   # its page (10 steps a page)
                row.click()
            _frames(page)
            counts.append(page.evaluate("window.countNodes()"))
            page.close()
            w.close()
        (b, s), extra = counts, len(big) - len(small)
        per100 = 100 * (b["all"] - s["all"]) / extra
        steps = f"; {n_steps[0]} vs {n_steps[1]} reasoning steps" if name == "ThinkingViewer" else ""
        report.goal(f"DOM nodes {name}{', ' + action if action else ''}",
                    f"{b['all']:,} at {len(big):,} tokens vs {s['all']:,} at {len(small):,} ({b['elements']:,} vs {s['elements']:,} "
                    f"elements): {b['all'] / s['all']:.2f}x, {per100:+.2f} nodes per 100 tokens more{steps}",
                    "about equal: within 10 % + 10 nodes", b["all"] <= 1.1 * s["all"] + 10,
                    f"{b['all'] - s['all']:,} nodes more, {b['all'] / s['all']:.1f}x")


# ---------------------------------------------------------------- JupyterLab

LAB_SETUP = """import copy
from cascade_lab.trace import synthetic_trace
from cascade_lab.explorer import RoutingExplorer
from cascade_lab.stepper import ThinkingViewer, TIRStepper, show
from cascade_lab.compare import CompareView
tr = synthetic_trace({tokens})
tr2 = copy.deepcopy(tr)                  # CompareView's second run: routing changed from a third in, in MoE layer 3
tr2.routing.experts[len(tr) // 3:, 3] = (tr2.routing.experts[len(tr) // 3:, 3] + 1) % tr2.routing.num_experts
len(tr)"""
LAB_CELLS = {"RoutingExplorer top1": "RoutingExplorer(tr)", "RoutingExplorer full": 'RoutingExplorer(tr, detail="full")',
             "ThinkingViewer": "ThinkingViewer(tr)", "TIRStepper": "TIRStepper(tr)", "CompareView": "CompareView(tr, tr2)",
             "show(trace)": "show(tr)"}

# Runs cell `i` with Lab's own command, with every other output cleared (the cell is in view, the page light), and
# times from the command to a new element with data-ready="1" in that cell (`n` of them: a box of widgets).
_JS_TIME_CELL = """async ([i, n]) => {
  const app = window.jupyterapp, nb = app.shell.currentWidget;
  await app.commands.execute('notebook:clear-all-cell-outputs');
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  nb.content.activeCellIndex = i;
  const cell = nb.content.widgets[i];
  const r = window.__clTiming = { t0: null, ready: null, complete: null, replied: null, error: null };
  const check = () => {
    const fresh = [...cell.node.querySelectorAll('[data-ready="1"]')].filter((e) => !e.dataset.clSeen);
    if (r.ready === null && fresh.length >= n) r.ready = performance.now();
    // complete: also every plane in (a progressive explorer drops data-pending once the rest has come and is drawn)
    if (r.ready !== null && fresh.every((e) => !e.dataset.pending)) { r.complete = performance.now(); obs.disconnect(); }
  };
  const obs = new MutationObserver(check);
  obs.observe(cell.node, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-ready', 'data-pending'] });
  r.t0 = performance.now();
  app.commands.execute('notebook:run-cell').then(() => { r.replied = performance.now(); },
                                                 (e) => { r.error = String(e); r.replied = performance.now(); });
  return true;
}"""
_JS_MARK_SEEN = "() => document.querySelectorAll('[data-ready]').forEach((e) => { e.dataset.clSeen = '1'; })"


def lab_figures(a, browser, report: Report) -> None:
    import importlib.util
    missing = [m for m in ("jupyterlab", "pytest", "psutil") if importlib.util.find_spec(m) is None]
    if missing: return print(f"\nSKIPPED the JupyterLab figures: {', '.join(missing)} not installed (pip install -e '.[dev]')")
    sys.path.insert(0, str(REPO / "tests"))
    from browser import LabPage, LabServer, notebook             # tests/browser.py: the Lab harness of the browser tests
    from cascade_lab.stepper import show
    from cascade_lab.trace import synthetic_trace
    import ipywidgets
    ready_n = {k: 1 for k in LAB_CELLS}
    sw = show(synthetic_trace(300))                              # how many widgets show() draws for such a trace
    ready_n["show(trace)"] = 1 if isinstance(sw, ipywidgets.Tab) else len(getattr(sw, "children", ())) or 1
    server = LabServer().start()
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    lp = LabPage(ctx.new_page(), server, name="bench_widgets")
    ctx.route(lambda url: not _loopback(url), lambda r: (lp.off_loopback.append(r.request.url), r.abort()))
    try:
        print(f"\n== visible in JupyterLab {_lab_version()}: from run-cell to data-ready=\"1\", trace of {a.tokens:,} tokens "
              f"made in a first cell (Lab started in {server.start_s:.1f} s)")
        name = server.add_notebook(notebook(LAB_SETUP.format(tokens=a.tokens), *LAB_CELLS.values()), "bench_widgets.ipynb")
        lp.open(name, timeout=120)
        _run_cell(lp, 0, 0)                                      # the trace, imports: not timed
        times = {k: [] for k in LAB_CELLS}
        for rnd in range(1 + a.lab_runs):
            for j, k in enumerate(LAB_CELLS):
                times[k].append(_run_cell(lp, j + 1, ready_n[k]))
        for k, ts in times.items():
            ready = [t[0] for t in ts]
            med = statistics.median(ready)
            report.goal(f"visible in Lab {k:<20} ({LAB_CELLS[k]})",
                        f"median {med:.3f} s of {len(ready)} runs (first {ready[0]:.3f} s, max {max(ready):.3f} s; "
                        f"kernel reply after {statistics.median(t[1] for t in ts):.3f} s)",
                        f"<= {GOALS['lab_s']:g} s, on the median", med <= GOALS["lab_s"], _over(med, GOALS["lab_s"], "s"))
            if k == "RoutingExplorer full":
                print(f"INFO  {k}: every slot in and drawn (data-pending gone) after a median "
                      f"{statistics.median(t[2] for t in ts):.3f} s (max {max(t[2] for t in ts):.3f} s)")
        if lp.console: print("      browser console: " + " | ".join(lp.console[-5:]))
    finally:
        ctx.close()
        left = server.stop()
        if left: report.error(f"processes outlived the JupyterLab server (killed): {left}")
    if lp.off_loopback: report.error(f"requests left loopback in JupyterLab: {lp.off_loopback[:5]}")


def _run_cell(lp, i: int, n_ready: int, timeout: float = 120) -> tuple[float, float]:
    """Run cell `i` in Lab; (seconds to `n_ready` new ready widgets, seconds to the kernel's reply, seconds until they
    are complete: a progressive explorer's other slots in)."""
    lp.page.evaluate(_JS_MARK_SEEN)
    lp.page.evaluate(_JS_TIME_CELL, [i, n_ready])
    want = "window.__clTiming.replied !== null" + (" && (window.__clTiming.complete !== null || window.__clTiming.error)" if n_ready else "")
    try: lp.page.wait_for_function(f"() => {want}", timeout=timeout * 1000, polling=100)
    except Exception as e: lp._fail(f"cell {i} did not run and show its widget within {timeout:.0f} s ({e})")
    r = lp.page.evaluate("window.__clTiming")
    errs = lp.cell_errors()
    if r["error"] or errs: raise RuntimeError(f"cell {i} failed: {r['error'] or errs}")
    lp.page.wait_for_function("() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
                              " return k && k.status === 'idle'; }", timeout=timeout * 1000, polling=100)
    ready = (r["ready"] - r["t0"]) / 1e3 if n_ready else float("nan")
    complete = (r["complete"] - r["t0"]) / 1e3 if n_ready else float("nan")
    return ready, (r["replied"] - r["t0"]) / 1e3, complete


def _lab_version() -> str:
    try:
        import jupyterlab
        return jupyterlab.__version__
    except ImportError: return "(version unknown)"


# ---------------------------------------------------------------- main

def browser_problem() -> str | None:
    "Why the browser part cannot run here (None when it can)."
    if not os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium not found: install Debian's chromium (`sudo apt-get install chromium`; never `playwright install`)"
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "Python playwright is not installed (it is in the dev extra: pip install -e '.[dev]')"
    return None


def browser_figures(a, traces: dict, report: Report) -> None:
    from playwright.sync_api import sync_playwright
    big, small = traces[BIG.format(a.tokens)], traces[SMALL]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True, chromium_sandbox=False,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--disable-sync", "--no-first-run",
                                           "--disable-default-apps", "--disable-extensions"])
        print(f"\nbrowser: chromium {browser.version}, headless, software rendering (--disable-gpu)")
        try:
            harness = Harness(browser)
            try:
                interaction_figures(a, harness, big, report)
                compare_figures(a, harness, big, report)
                dom_figures(harness, big, small, report)
            finally:
                harness.close()
                if harness.off_loopback: report.error(f"requests left loopback: {harness.off_loopback[:5]}")
                if harness.page_errors: report.error(f"page errors: {harness.page_errors[:5]}")
            if a.lab: lab_figures(a, browser, report)
            else: print("\n(JupyterLab figures skipped: --no-lab)")
        finally:
            browser.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs and samples, no fresh demo trace (for CI)")
    ap.add_argument("--no-browser", dest="browser", action="store_false", help="the Python figures only")
    ap.add_argument("--no-lab", dest="lab", action="store_false", help="skip the JupyterLab figures (the loopback page still runs)")
    ap.add_argument("--tokens", type=int, default=32768, help="tokens of the large synthetic trace")
    ap.add_argument("--runs", type=int, help="builds of each widget timed (default 5, --quick 2)")
    ap.add_argument("--hovers", type=int, help="hover positions (default 30, --quick 10)")
    ap.add_argument("--redraws", type=int, help="zoom/pan redraws (default 20, --quick 8)")
    ap.add_argument("--lab-runs", type=int, help="reruns of each widget cell in Lab after the first (default 4, --quick 1)")
    ap.add_argument("--no-fresh", dest="fresh", action="store_false", help="no demo TIR trace generated now")
    a = ap.parse_args(argv)
    for k, full, quick in (("runs", 5, 2), ("hovers", 30, 10), ("redraws", 20, 8), ("lab_runs", 4, 1)):
        if getattr(a, k) is None: setattr(a, k, quick if a.quick else full)
    a.fresh = a.fresh and not a.quick
    report = Report()
    print(f"widgets benchmark: RoutingExplorer (top1, full), ThinkingViewer, TIRStepper, show(); "
          f"synthetic_trace({a.tokens}) (23 MoE layers, top-6 of 128) and the demo traces{' (quick)' if a.quick else ''}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start, "
          f"python {platform.python_version()}")
    try:
        traces = load_traces(a, report)
        python_figures(a, traces, report)
        if not a.browser: print("\n(browser figures skipped: --no-browser)")
        elif problem := browser_problem(): print(f"\nSKIPPED the browser figures (hover, redraw, DOM nodes, JupyterLab): {problem}")
        else: browser_figures(a, traces, report)
    except Exception as e:
        traceback.print_exc()
        report.error(f"{type(e).__name__}: {e}")
    report.summary()
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
