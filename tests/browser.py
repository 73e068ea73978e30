"""A real JupyterLab and a real browser for the widget tests: a helper module for tests, not a test file.

What it gives a test module (tests/test_lab.py is the worked example):

    from browser import LabPage, chromium, lab_server, lab_page, notebook   # noqa: F401 (pytest fixtures)

    def test_my_widget(lab_server, lab_page):
        name = lab_server.add_notebook(notebook("from cascade_lab.explorer import RoutingExplorer", "RoutingExplorer(tr)"))
        lab_page.open(name)                       # /lab/tree/NAME?token=..., waits for its kernel
        lab_page.run_all()                        # Lab's own `notebook:run-all-cells` command
        lab_page.wait_widgets(1)                  # a widget output shows (data-ready="1", or a canvas with ink)
        lab_page.wait_done()                      # every cell ran; raises with the traceback of a failing cell
        out = lab_page.cell_output("RoutingExplorer(")   # the output area of the cell whose source has this text
        assert lab_page.canvas_ink(out)[0]["ink"] > 0
        lab_page.screenshot("explorer", out)      # tests/artifacts/<test>-explorer.png: look at it
        # at the end of every test the fixture asserts that no request left loopback

- `lab_server` (module scope): `jupyter lab` from this Python (so `cascade_lab` and its kernel are the venv's) on
  127.0.0.1 at a free port, behind a random token, in a temporary `--ServerApp.root_dir`, with its own config,
  data-less runtime and settings folders (no user state leaks in), `window.jupyterapp` exposed, news and update
  checks off. It waits until `/api/status` answers and, at the end, shuts the server down through its API,
  then checks that the server and every process it started (kernels and their children) are gone: a leftover
  process fails the module. `add_notebook(source_or_dict, name)` copies a notebook in, outputs cleared.
- `chromium` (module scope): Debian's `/usr/bin/chromium` driven by Python playwright (`executable_path`, no
  browser download), headless, no sandbox, no background networking. Skips with the way to install it when
  missing (`make test` installs it when it can: scripts/test.sh).
- `lab_page` (per test): a fresh browser context and page as a `LabPage`. Every request whose host is not
  127.0.0.1 / localhost / ::1 is recorded and aborted (so a CDN dependency fails here even on a machine that is
  online); the test fails at teardown when there was any. Page errors and console errors are kept
  (`lab_page.console`) and printed when a wait fails. A screenshot of the page is saved at teardown.

Screenshots go to tests/artifacts/ (git-ignored; BROWSER_ARTIFACTS=DIR puts them elsewhere); their paths are printed
(`pytest -s` shows them).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS") or Path(__file__).resolve().parent / "artifacts")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
INSTALL_HINT = ("install Debian's chromium: `make test` does it when apt-get is there and it runs as root or with "
                "passwordless sudo; otherwise run `sudo apt-get install chromium` (never `playwright install`)")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Lab settings for the test server: no news feed, no update check (and no toast asking about them).
LAB_SETTINGS = {"@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}
CHROMIUM_ARGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", "--disable-extensions"]


def chromium_problem() -> str | None:
    "Why the browser tests cannot run here (None when they can)."
    if not os.path.exists(CHROMIUM): return f"{CHROMIUM} not found: {INSTALL_HINT}"
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "Python playwright is not installed (it is in the dev extra: pip install -e '.[dev]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook(*cells: str, markdown: tuple = ()) -> dict:
    "A notebook dict (nbformat 4.5, python3 kernel) with one code cell per source string in `cells`."
    mk = lambda i, src: {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None,
                         "outputs": [], "source": src}
    return {"nbformat": 4, "nbformat_minor": 5, "cells": [mk(i, s) for i, s in enumerate(cells)],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "language_info": {"name": "python"}}}


class LabServer:
    "A JupyterLab server on loopback with a token, in a temporary root folder (see the module docstring)."

    def __init__(self, python: str = sys.executable, settings: dict | None = None, env: dict | None = None):
        self.python, self.settings = python, {**LAB_SETTINGS, **(settings or {})}
        self.extra_env = env or {}
        self.tmp = Path(tempfile.mkdtemp(prefix="cascade-lab-jl-"))
        self.root = self.tmp / "root"
        self.root.mkdir()
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.tmp / "server.log"
        self.start_s: float | None = None
        self._children: dict[int, float] = {}   # pid -> create_time of every process seen under the server

    @property
    def base(self) -> str: return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET", timeout: float = 5):
        req = urllib.request.Request(f"{self.base}/api/{path.lstrip('/')}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if body else None

    def _write_settings(self, folder: Path):
        for key, value in self.settings.items():
            plugin, name = key.rsplit("/", 1)
            f = folder / plugin / f"{name}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))

    def start(self, timeout: float = 90) -> "LabServer":
        t0 = time.monotonic()
        state = self.tmp / "state"
        for d in ("config", "data", "runtime", "settings", "workspaces", "ipython"): (state / d).mkdir(parents=True)
        self._write_settings(state / "settings")
        env = {**os.environ, "JUPYTER_TOKEN": self.token, "JUPYTER_CONFIG_DIR": str(state / "config"),
               "JUPYTER_DATA_DIR": str(state / "data"), "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
               "IPYTHONDIR": str(state / "ipython"), "JUPYTER_PLATFORM_DIRS": "1", **self.extra_env}
        cmd = [self.python, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={self.root}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.user_settings_dir={state / 'settings'}", f"--LabApp.workspaces_dir={state / 'workspaces'}"]
        if os.geteuid() == 0: cmd.append("--allow-root")
        self._log = open(self.log_path, "wb")
        # its own session: Ctrl+C in the terminal running pytest does not reach it, the fixture stops it
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if "started" in (self.api("status", timeout=1) or {}): break
            except (urllib.error.URLError, OSError, ValueError): pass
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"jupyter lab did not answer /api/status within {timeout:.0f} s:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        self.start_s = time.monotonic() - t0
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def add_notebook(self, nb, name: str | None = None, clear_outputs: bool = True) -> str:
        """Copy notebook `nb` (a path or a notebook dict) into the server's root as `name` (default: the file's name),
        with its outputs cleared unless `clear_outputs=False`. Returns the name, relative to the root."""
        if isinstance(nb, (str, Path)):
            name = name or Path(nb).name
            nb = json.loads(Path(nb).read_text(encoding="utf-8"))
        if name is None: raise ValueError("add_notebook: give a name for a notebook dict")
        if clear_outputs:
            for c in nb["cells"]:
                if c.get("cell_type") == "code": c["outputs"], c["execution_count"] = [], None
        dest = self.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(nb, indent=1), encoding="utf-8")
        return name

    def _remember_children(self):
        import psutil
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True): self._children[p.pid] = p.create_time()
        except psutil.NoSuchProcess: pass

    def shutdown_kernels(self):
        "Stop every session (and its kernel): between tests, so one test's kernel does not run on into the next."
        self._remember_children()
        for s in self.api("sessions"): self.api(f"sessions/{s['id']}", method="DELETE", timeout=20)

    def leftovers(self) -> list[str]:
        "Processes the server started that are still alive (same pid and start time as when seen)."
        import psutil
        alive = []
        for pid, created in self._children.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {' '.join(p.cmdline())[:150]}")
            except psutil.NoSuchProcess: pass
        return alive

    def stop(self, grace: float = 5) -> list[str]:
        """Shut the server down (its API's shutdown, which stops its kernels; SIGTERM, then SIGKILL, if it does not
        exit) and return the processes it started that were still alive `grace` seconds after it exited (they are
        killed by then)."""
        import psutil
        if self.proc is None: return []
        if self.proc.poll() is None:
            self._remember_children()
            try: self.api("shutdown", method="POST", timeout=10)
            except (urllib.error.URLError, OSError): self.proc.terminate()
            try: self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try: self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        deadline = time.monotonic() + grace
        while (left := self.leftovers()) and time.monotonic() < deadline: time.sleep(0.1)
        for entry in left:
            try: psutil.Process(int(entry.split()[0])).kill()
            except psutil.NoSuchProcess: pass
        self._log.close()
        self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        return left


# ---------------------------------------------------------------- the page

# In-page JavaScript. `window.jupyterapp` is there because the server runs with expose_app_in_browser.
_JS_PANEL = "(window.jupyterapp && window.jupyterapp.shell.currentWidget)"
_JS_NOTEBOOK_READY = f"""() => {{
  const nb = {_JS_PANEL};
  if (!nb || !nb.sessionContext || !nb.content || !nb.context || !nb.context.isReady) return false;
  const k = nb.sessionContext.session && nb.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}}"""
_JS_RUN_ALL = f"""() => {{
  const app = window.jupyterapp;
  window.__cl_run = {{start: performance.now(), done: null, ok: null, error: null}};
  app.commands.execute('notebook:run-all-cells').then(
    ok => {{ window.__cl_run.ok = ok; window.__cl_run.done = performance.now(); }},
    e => {{ window.__cl_run.error = String(e); window.__cl_run.done = performance.now(); }});
  return true;
}}"""
_JS_RUN_DONE = f"""() => {{
  const r = window.__cl_run, nb = {_JS_PANEL};
  if (!r || r.done === null) return false;
  const k = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const busy = [...nb.node.querySelectorAll('.jp-InputPrompt')].some(p => p.textContent.includes('*'));
  return !busy && k && k.status === 'idle';
}}"""
_JS_CELL_ERRORS = f"""() => {{
  const nb = {_JS_PANEL}, errs = [];
  nb.content.widgets.forEach((c, i) => {{
    if (c.model.type !== 'code') return;
    for (let j = 0; j < c.model.outputs.length; j++) {{
      const o = c.model.outputs.get(j).toJSON();
      if (o.output_type === 'error')
        errs.push({{cell: i, source: c.model.sharedModel.getSource().slice(0, 200), ename: o.ename, evalue: o.evalue,
                   traceback: (o.traceback || []).join('\\n').replace(/\\x1b\\[[0-9;]*m/g, '')}});
    }}
  }});
  return errs;
}}"""
_JS_CELL_INDEX = f"""(text) => {{
  const nb = {_JS_PANEL};
  return nb.content.widgets.findIndex(c => c.model.type === 'code' && c.model.sharedModel.getSource().includes(text));
}}"""
# Pixels of every <canvas> under an element: `ink` counts the pixels that are not transparent and differ from the
# canvas' top-left pixel (its background). Copied through a 2D canvas, so WebGL canvases are read too.
_JS_CANVAS_INK = """(root) => [...root.querySelectorAll('canvas')].map(c => {
  const r = {width: c.width, height: c.height, ink: 0, error: null};
  if (!c.width || !c.height) return r;
  try {
    const cp = document.createElement('canvas'); cp.width = c.width; cp.height = c.height;
    const g = cp.getContext('2d'); g.drawImage(c, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    for (let i = 0; i < d.length; i += 4)
      if (d[i + 3] > 0 && (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3])) r.ink++;
  } catch (e) { r.error = String(e); }
  return r;
})"""
# Tags every widget output area with data-cl-widget="1" (Lab gives them no mime-type attribute: they are found
# through the cells' output models) and returns how many there are and how many are ready: an element inside with
# data-ready="1" (the widgets' own signal), else a canvas with ink.
_JS_WIDGETS = f"""() => {{
  const nb = {_JS_PANEL}, outs = [];
  if (!nb || !nb.content) return {{total: 0, ready: 0}};
  for (const c of nb.content.widgets) {{
    if (c.model.type !== 'code' || !c.outputArea) continue;
    for (let j = 0; j < c.model.outputs.length; j++) {{
      const data = c.model.outputs.get(j).toJSON().data || {{}};
      const child = c.outputArea.widgets[j];
      if (!('{WIDGET_MIME}' in data) || !child) continue;
      const el = child.node.querySelector('.jp-OutputArea-output') || child.node;
      el.dataset.clWidget = '1';
      outs.push(el);
    }}
  }}
  const inked = (el) => [...el.querySelectorAll('canvas')].some(c => {{
    if (!c.width || !c.height) return false;
    try {{
      const cp = document.createElement('canvas'); cp.width = c.width; cp.height = c.height;
      const g = cp.getContext('2d'); g.drawImage(c, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      for (let i = 4; i < d.length; i += 4)
        if (d[i + 3] > 0 && (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3])) return true;
    }} catch (e) {{}}
    return false;
  }});
  const ready = outs.filter(el => el.querySelector('[data-ready="1"]') || inked(el)).length;
  return {{total: outs.length, ready}};
}}"""


def _is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss", "ftp"): return True   # data:, blob:, about:, chrome-...
    return (parts.hostname or "") in LOOPBACK


class LabPage:
    "A playwright page on a `LabServer`, with the helpers the widget tests need."

    def __init__(self, page, server: LabServer, name: str = "page"):
        self.page, self.server, self.name = page, server, name
        self.off_loopback: list[str] = []
        self.console: list[str] = []
        self.run_started: float | None = None
        page.on("console", lambda m: m.type in ("error", "warning") and self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        page.on("websocket", lambda ws: _is_loopback(ws.url) or self.off_loopback.append(f"websocket {ws.url}"))

    def _fail(self, what: str):
        shot = self.screenshot("failure")
        console = "\n".join(self.console[-30:]) or "(none)"
        raise AssertionError(f"{what}\nscreenshot: {shot}\nbrowser console (errors and warnings):\n{console}\n"
                             f"server log (end):\n{self.server.log()[-2000:]}")

    def open(self, name: str, timeout: float = 60) -> float:
        """Open notebook `name` (relative to the server's root) in Lab in a fresh workspace, and wait until its kernel
        is connected and idle. Returns the seconds it took."""
        t0 = time.monotonic()
        self.page.goto(self.server.url(f"lab/tree/{quote(name)}?reset"))
        try: self.page.wait_for_function(_JS_NOTEBOOK_READY, timeout=timeout * 1000, polling=100)
        except Exception as e: self._fail(f"notebook {name} did not open with an idle kernel within {timeout:.0f} s ({e})")
        return time.monotonic() - t0

    def run_all(self):
        "Start Lab's `notebook:run-all-cells` on the open notebook (returns at once; see `wait_done`)."
        self.page.evaluate(_JS_RUN_ALL)
        self.run_started = time.monotonic()

    def wait_done(self, timeout: float = 120, allow_errors: bool = False) -> float:
        """Wait until run-all has finished and the kernel is idle; fail with the traceback of any cell that raised
        (unless `allow_errors`). Returns the seconds since `run_all`."""
        try: self.page.wait_for_function(_JS_RUN_DONE, timeout=timeout * 1000, polling=200)
        except Exception as e: self._fail(f"run-all did not finish within {timeout:.0f} s ({e})")
        errs = self.page.evaluate(_JS_CELL_ERRORS)
        if errs and not allow_errors:
            self._fail("cells raised:\n" + "\n\n".join(f"cell {e['cell']}: {e['source']!r}\n{e['traceback'] or e['ename'] + ': ' + e['evalue']}"
                                                       for e in errs))
        return time.monotonic() - self.run_started

    def cell_errors(self) -> list[dict]: return self.page.evaluate(_JS_CELL_ERRORS)

    def widget_status(self) -> dict:
        "{'total': widget outputs on the page, 'ready': those showing (data-ready='1' inside, or a canvas with ink)}"
        return self.page.evaluate(_JS_WIDGETS)

    def wait_widgets(self, n: int = 1, timeout: float = 120) -> float:
        """Wait until at least `n` widget outputs are ready. Returns the seconds since `run_all` (or since the call)."""
        t0 = self.run_started or time.monotonic()
        try: self.page.wait_for_function(f"() => ({_JS_WIDGETS})().ready >= {n}", timeout=timeout * 1000, polling=50)
        except Exception as e: self._fail(f"{n} widget(s) not ready within {timeout:.0f} s: {self.widget_status()} ({e})")
        return time.monotonic() - t0

    def widget_outputs(self, within=None):
        """A playwright Locator for every widget output area (a `.jp-OutputArea-output` showing a widget view) on the
        page, or under Locator `within` (e.g. `cell_output(...)`)."""
        self.widget_status()   # tags them
        return (within or self.page).locator('.jp-OutputArea-output[data-cl-widget="1"]')

    def cell(self, contains: str):
        "Locator of the first code cell whose source contains `contains`."
        i = self.page.evaluate(_JS_CELL_INDEX, contains)
        if i < 0: raise LookupError(f"no code cell contains {contains!r}")
        return self.page.locator(".jp-Notebook .jp-Cell").nth(i)

    def cell_output(self, contains: str):
        "Locator of the output area of the first code cell whose source contains `contains`."
        return self.cell(contains).locator(".jp-OutputArea").first

    def canvas_ink(self, locator) -> list[dict]:
        "For each <canvas> under `locator`: {'width', 'height', 'ink': pixels not blank, 'error'}."
        locator.scroll_into_view_if_needed()
        return locator.evaluate(_JS_CANVAS_INK)

    def screenshot(self, label: str, locator=None) -> Path:
        "Save a PNG of the page (or of `locator`) as tests/artifacts/<test>-<label>.png; prints and returns the path."
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{label}.png"
        try:
            if locator is None: self.page.screenshot(path=str(path))
            else: locator.screenshot(path=str(path))
            print(f"\n[browser] screenshot {path}")
        except Exception as e:   # a screenshot is evidence, not the test: never hide the real failure behind it
            print(f"\n[browser] screenshot {label} failed: {e}")
        return path


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def chromium():
    "Headless Debian chromium through playwright, for the module. Skips, saying how to install it, when missing."
    if problem := chromium_problem(): pytest.skip(problem)
    from playwright.sync_api import sync_playwright
    pw = sync_playwright().start()
    t0 = time.monotonic()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, chromium_sandbox=False,
                                     args=["--no-sandbox", *CHROMIUM_ARGS])
    except Exception:
        pw.stop()
        raise
    print(f"\n[browser] chromium {browser.version} launched in {time.monotonic() - t0:.1f} s")
    try: yield browser
    finally:
        browser.close()
        pw.stop()


@pytest.fixture(scope="module")
def lab_server(chromium):
    "One JupyterLab server for the module (it asks for `chromium` first: without a browser, no server is started)."
    server = LabServer().start()
    print(f"\n[browser] JupyterLab up in {server.start_s:.1f} s at {server.base}")
    try: yield server
    finally:
        left = server.stop()
        assert not left, f"processes outlived the JupyterLab server (killed now): {left}"


@pytest.fixture
def lab_page(request, chromium, lab_server):
    "A fresh context and page per test, as a `LabPage`; fails the test if any request left loopback."
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    lp = LabPage(context.new_page(), lab_server, name=request.node.name)

    def block(route):
        lp.off_loopback.append(f"{route.request.method} {route.request.url}")
        route.abort()
    context.route(lambda url: not _is_loopback(url), block)
    try: yield lp
    finally:
        lp.screenshot("end")
        context.close()
        lab_server.shutdown_kernels()
    assert not lp.off_loopback, f"requests left loopback: {lp.off_loopback}"
