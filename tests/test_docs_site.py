"""The built documentation site (`make docs` -> docs/_build/html): every internal link and anchor resolves, and in
headless chromium the quickstart, routing-study, TIR and interventions pages render their widgets and figures from the stored
state with no request leaving loopback: a canvas draws, a plotly figure has its traces, hovering the routing grid
shows a token's experts, the stepper's next button changes the step.

`make test` builds the site first and sets CASCADE_LAB_DOCS_BUILT=1, so a missing site fails here; run alone
without a built site, these tests skip and say to run `make docs`. Screenshots go to tests/artifacts/ (look at
them); first-render times are printed (`pytest -s`)."""
import functools
import http.server
import os
import re
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from browser import ARTIFACTS, _JS_CANVAS_INK, _is_loopback, chromium  # noqa: F401 (pytest fixture)

SITE = Path(__file__).resolve().parents[1] / "docs" / "_build" / "html"


@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").exists():
        msg = f"no built site at {SITE}: run `make docs`"
        if os.environ.get("CASCADE_LAB_DOCS_BUILT"): pytest.fail(msg)
        pytest.skip(msg)
    return SITE


# ---------------------------------------------------------------- the link check
class _Links(HTMLParser):
    "The ids and the links (href, src) of one page."
    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        if tag == "a" and a.get("name"): self.ids.add(a["name"])
        for k in ("href", "src"):
            if a.get(k) and not (tag == "script" and a.get("type", "").startswith("application/")): self.links.append(a[k])


def _parse(path: Path) -> _Links:
    p = _Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def check_links(root: Path) -> tuple[int, list[str]]:
    "(internal links checked, problems): every relative link of every page names a file there, and its anchor an id."
    pages = {p: _parse(p) for p in root.rglob("*.html")}
    n, bad = 0, []
    for page, parsed in pages.items():
        for link in parsed.links:
            u = urlsplit(link)
            if u.scheme or u.netloc or link.startswith(("mailto:", "javascript:", "data:")): continue
            n += 1
            target = page if not u.path else (page.parent / unquote(u.path)).resolve()
            if target.is_dir(): target = target / "index.html"
            where = f"{page.relative_to(root)}: {link}"
            if not target.exists(): bad.append(f"{where} (no file {target})"); continue
            if u.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(u.fragment) not in ids: bad.append(f"{where} (no id {u.fragment!r} in {target.name})")
    return n, bad


def test_link_check_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    (tmp_path / "a.html").write_text('<p id="x"></p><a href="b.html#y">b</a><a href="#x">ok</a><a href="c.html">c</a>'
                                     '<a href="https://example.com/">ext</a>')
    (tmp_path / "b.html").write_text('<h1 id="z">b</h1>')
    n, bad = check_links(tmp_path)
    assert n == 3 and len(bad) == 2, bad
    assert "no id 'y'" in bad[0] and "no file" in bad[1]


def test_every_internal_link_and_anchor_resolves(site):
    n, bad = check_links(site)
    print(f"\n[docs] {n} internal links checked in {len(list(site.rglob('*.html')))} pages")
    assert n > 500, f"only {n} internal links found: is the site complete?"
    assert not bad, f"{len(bad)} broken internal links:\n" + "\n".join(bad[:40])


# ---------------------------------------------------------------- the pages in a browser
@pytest.fixture(scope="module")
def server(site):
    "The built site on an ephemeral loopback port."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try: yield f"http://127.0.0.1:{httpd.server_port}"
    finally: httpd.shutdown(); httpd.server_close()


class _Page:
    "A page of the site in its own browser context; every request off loopback is recorded and aborted."
    def __init__(self, browser, base: str, path: str, name: str):
        self.ctx = browser.new_context(viewport={"width": 1300, "height": 950})
        self.off, self.errors, self.missing = [], [], []
        self.ctx.route(lambda url: not _is_loopback(url), self._block)
        self.page = self.ctx.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("response", lambda r: r.status >= 400 and self.missing.append(f"{r.status} {r.url}"))
        self.name = name
        t = time.monotonic()
        self.page.goto(f"{base}/{path}")
        self.page.wait_for_load_state("load")
        self.loaded = time.monotonic() - t
        self.t0 = t

    def _block(self, route):
        self.off.append(route.request.url)
        route.abort()

    def wait(self, js: str, what: str, timeout: float = 30) -> float:
        "Seconds from navigation until `js` is true."
        try: self.page.wait_for_function(js, timeout=timeout * 1000, polling=50)
        except Exception as e:
            shot = self.shot("failure")
            raise AssertionError(f"{self.name}: {what} not within {timeout:.0f} s ({e}); errors: {self.errors}; "
                                 f"screenshot {shot}") from None
        return time.monotonic() - self.t0

    def shot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"docs-{self.name}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"\n[browser] screenshot {path}")
        return path

    def close(self):
        self.ctx.close()
        assert not self.off, f"{self.name}: requests left loopback: {self.off}"
        assert not self.missing, f"{self.name}: requests failed: {self.missing}"
        assert not self.errors, f"{self.name}: page errors: {self.errors}"


WIDGETS_DRAWN = "() => document.querySelectorAll('.widget-subarea').length >= {n} && [...document.querySelectorAll('.widget-subarea canvas')].length > 0"


def _ink(page, selector: str) -> list[dict]:
    "For the canvas `selector` (and its sibling canvases): pixels that are not the background."
    loc = page.locator(selector).first
    loc.scroll_into_view_if_needed()
    return loc.locator("xpath=..").evaluate(_JS_CANVAS_INK)


def test_quickstart_widgets_draw_and_the_grid_hovers(chromium, server):
    p = _Page(chromium, server, "tutorials/quickstart.html", "quickstart")
    first = p.wait(WIDGETS_DRAWN.format(n=3), "three widgets drawn")
    print(f"\n[docs] quickstart: loaded {p.loaded:.2f} s, widgets drawn {first:.2f} s, {len(p.page.content()):,} bytes of DOM")
    grid = p.page.locator(".cl-rx-grid").first
    ink = _ink(p.page, ".cl-rx-grid")
    assert ink and max(c["ink"] for c in ink) > 1000, f"the routing grid's canvas is blank: {ink}"
    box = grid.bounding_box()
    head = p.page.locator(".cl-rx-hover-head").first
    before = head.inner_text()
    p.page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.3)
    p.wait("() => { const t = document.querySelector('.cl-rx-hover-table'); return t && t.innerText.trim().length > 0 }",
           "the hovered token's experts")
    after = head.inner_text()
    table = p.page.locator(".cl-rx-hover-table").first.inner_text()
    print(f"[docs] hover: {after!r}; experts table: {table[:120]!r}")
    assert after != before and re.search(r"\d", table), (before, after, table)
    p.shot("hovered")
    p.close()


def test_routing_study_draws_its_figures(chromium, server):
    p = _Page(chromium, server, "tutorials/routing_study.html", "routing_study")
    first = p.wait("() => [...document.querySelectorAll('.js-plotly-plot')].some(d => d.data && d.data.length > 0)",
                   "a plotly figure with traces")
    traces = p.page.evaluate("[...document.querySelectorAll('.js-plotly-plot')].map(d => d.data.length)")
    n_div = p.page.evaluate("document.querySelectorAll('div.cascade-plotly').length")
    print(f"\n[docs] routing study: loaded {p.loaded:.2f} s, first figure {first:.2f} s, traces per figure {traces}")
    assert len(traces) == n_div and all(t > 0 for t in traces), (traces, n_div)
    assert p.page.evaluate("document.querySelectorAll('script[src*=\"plotly.min.js\"]').length") == 1
    p.shot("figures")
    p.close()


def test_tir_walkthrough_stepper_steps(chromium, server):
    p = _Page(chromium, server, "tutorials/tir_walkthrough.html", "tir_walkthrough")
    first = p.wait("() => document.querySelector('.ts-pos') !== null", "the TIR stepper")
    print(f"\n[docs] TIR walkthrough: loaded {p.loaded:.2f} s, stepper drawn {first:.2f} s")
    pos = p.page.locator(".ts-pos").first
    first_step = p.page.locator("button[title='first step']").first
    if first_step.is_enabled(): first_step.click()
    before = pos.inner_text()
    p.page.locator("button[title='next step']").first.click()
    p.wait(f"() => document.querySelector('.ts-pos').innerText !== {before!r}", "the next step")
    after = pos.inner_text()
    print(f"[docs] stepper: {before!r} -> {after!r}")
    m0, m1 = re.search(r"step (\d+)", before), re.search(r"step (\d+)", after)
    assert m0 and m1 and int(m1.group(1)) == int(m0.group(1)) + 1, (before, after)
    p.shot("next-step")
    p.close()


def test_intervene_runs_view_draws(chromium, server):
    "The RunsView of the interventions page: its summary, the KL line with the divergence marked, the aligned routing."
    p = _Page(chromium, server, "intervene.html", "intervene")
    first = p.wait("() => document.querySelector('.cl-runs-summary') !== null && document.querySelector('.cl-runs-diff') !== null"
                   " && [...document.querySelectorAll('.widget-subarea canvas')].length > 0", "the runs view")
    print(f"\n[docs] intervene: loaded {p.loaded:.2f} s, runs view drawn {first:.2f} s")
    summary = p.page.locator(".cl-runs-divergence").first.inner_text()
    rows = p.page.evaluate("document.querySelector('.cl-runs-diff table').rows.length")
    marks = p.page.evaluate("document.querySelectorAll('.cl-runs-kl line').length")
    print(f"[docs] runs view: {summary!r}; {rows} rows in the difference table; {marks} divergence mark")
    assert "first divergence at token" in summary and rows >= 2 and marks == 1, (summary, rows, marks)
    ink = _ink(p.page, ".cl-cv canvas")
    assert ink and max(c["ink"] for c in ink) > 1000, f"the aligned routing's canvas is blank: {ink}"
    p.shot("runs-view")
    p.close()


# ---------------------------------------------------------------- the API check of scripts/docs.py
def test_api_check_fails_on_a_missing_entry(tmp_path, monkeypatch):
    "check_site names a public name whose API entry is missing from its module's page (and passes once it is there)."
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import docs
    import cascade_lab.routing as routing
    monkeypatch.setattr(docs, "HTML", tmp_path)
    monkeypatch.setattr(docs, "MODULES", {"nbs/08_routing.ipynb": "routing"})
    monkeypatch.setattr(docs, "MIN_MODULES", 1)
    entries = [n for n in routing.__all__ if n != "moe_routers"]
    (tmp_path / "routing.html").write_text("".join(f'<p class="rubric" id="{n.lower()}">{n}</p>' for n in entries))
    with pytest.raises(SystemExit, match="no API entry for moe_routers"):
        docs.check_site({"nbs/08_routing.ipynb": "routing.ipynb"})
    (tmp_path / "routing.html").write_text("".join(f'<p class="rubric">{n}</p>' for n in routing.__all__))
    docs.check_site({"nbs/08_routing.ipynb": "routing.ipynb"})
