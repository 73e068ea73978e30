#!/usr/bin/env python
"""Build the documentation site from the notebooks: `make docs` (into docs/_build/html, offline, no CDN).

1. Vendor the browser libraries the widgets need, from package registries only: requirejs and the Jupyter
   widgets html manager from the npm registry (pinned versions, integrity hashes checked, tarballs cached in
   ~/.cache/cascade-lab/npm), MathJax likewise; anywidget's front end and plotly.js from their pip packages.
2. Process the notebooks into _proc/ (nbdev's processing without Quarto, which cannot be installed from the
   package registries): a `show_doc` cell after every exported definition, nbdev's directives turned into
   MyST-NB cell tags (`#| hide`, `#| export` -> removed from the page, `#| echo: false` -> input hidden,
   `#| slow` / `#| gpu` -> not executed), pages named as nbdev names them (`03_trace.ipynb` -> `trace.html`),
   links to other notebooks and to repository files rewritten for the site.
3. Execute the notebooks that show widgets or figures, and every tutorial, on the demo model (nbclient, with
   the widgets' state stored, so the views render on the static page); a cache keyed by the notebook and the
   package means an unchanged notebook is not re-run. The other notebooks keep their committed outputs, which
   `make test` proves current (scripts/nb_outputs.py --check). Plotly figures become a <div> drawn by the
   one local plotly.js of the page.
4. Sphinx with MyST-NB over _proc/ (docs/conf.py), warnings are errors.
5. Check the site: every public name of every module has its API entry on its page, and no page is heavier
   than 5 MB.

Usage: python scripts/docs.py [--no-exec-cache] [--jobs N]
"""
from __future__ import annotations

import argparse
import ast
import base64
import concurrent.futures as cf
import copy
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, PROC, DOCS = ROOT / "nbs", ROOT / "_proc", ROOT / "docs"
BUILD = DOCS / "_build"
HTML, VENDOR, EXEC_CACHE = BUILD / "html", BUILD / "vendor", BUILD / "exec_cache"
NPM_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cascade-lab" / "npm"
GITHUB = "https://github.com/cascade-lab/cascade-lab/blob/main/"
MAX_PAGE = 5_000_000
MIN_MODULES = 15           # module pages the API check must find (a check that finds none would pass silently)
MODULES: dict[str, str | None] = {}       # notebook -> the module it exports (`#| default_exp`), filled while processing
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PLOTLY_MIME = "application/vnd.plotly.v1+json"

# (package, version, sha512 integrity, {member in the tarball: path under vendor/}); a directory member copies
# the whole tree under it.
NPM = [
    ("requirejs", "2.3.8",
     "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
     {"package/require.js": "require.js"}),
    ("@jupyter-widgets/html-manager", "1.0.15",
     "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
     {"package/dist/embed-amd.js": "embed-amd.js"}),
    ("mathjax", "3.2.2",
     "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
     {"package/es5/tex-chtml.js": "mathjax/tex-chtml.js", "package/es5/output/chtml/fonts/woff-v2/": "mathjax/output/chtml/fonts/woff-v2/"}),
]


def log(*a): print("docs:", *a, flush=True)


# ---------------------------------------------------------------- 1. vendored browser libraries
def _npm_tarball(name: str, version: str, integrity: str) -> Path:
    "The package's tarball from the npm registry (cached), refused unless its sha512 matches the pinned one."
    algo, want = integrity.split("-", 1)
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    path = NPM_CACHE / f"{name.replace('/', '__')}-{version}.tgz"
    if not path.exists():
        registry = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")
        url = f"{registry}/{name}/-/{name.split('/')[-1]}-{version}.tgz"
        log(f"fetching {url}")
        try:
            with urllib.request.urlopen(url, timeout=120) as r: data = r.read()
        except OSError as e:
            sys.exit(f"docs: could not fetch {url} ({e}). The site needs {name}@{version} from the npm registry once; "
                     f"it is cached in {NPM_CACHE} afterwards (or set NPM_CONFIG_REGISTRY to a mirror).")
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.rename(path)
    got = base64.b64encode(hashlib.new(algo, path.read_bytes()).digest()).decode()
    if got != want:
        path.unlink()
        sys.exit(f"docs: {name}@{version}: integrity mismatch ({algo} {got}, pinned {want}); the cached file was removed")
    return path


def vendor_assets() -> None:
    "Put every browser library the pages load under docs/_build/vendor (served as _static/vendor/...)."
    import anywidget, plotly
    (VENDOR / "anywidget").mkdir(parents=True, exist_ok=True)
    for name, version, integrity, members in NPM:
        with tarfile.open(_npm_tarball(name, version, integrity)) as tf:
            for m in tf.getmembers():
                for src, dst in members.items():
                    if m.isfile() and (m.name == src or (src.endswith("/") and m.name.startswith(src))):
                        out = VENDOR / (dst if m.name == src else dst + m.name[len(src):])
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(tf.extractfile(m).read())
    shutil.copy(Path(anywidget.__file__).parent / "nbextension" / "index.js", VENDOR / "anywidget" / "index.js")
    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", VENDOR / "plotly.min.js")


# ---------------------------------------------------------------- 2. notebooks -> _proc/
def page_of(rel: str) -> str:
    "Where a source file of the site goes under _proc/ (repository-relative paths, '/' separated)."
    if rel == "README.md": return "index.md"
    if rel == "nbs/index.ipynb": return "overview.ipynb"
    if rel.startswith("nbs/"):     # nbdev's page names: the number prefix goes (nbs/03_trace.ipynb -> trace)
        folder, _, name = rel[4:].rpartition("/")
        return (folder + "/" if folder else "") + re.sub(r"^\d+[a-zA-Z0-9]*_", "", name)
    return rel


def sources() -> dict[str, str]:
    "Every file of the site: repository path -> page path under _proc/."
    files = ["README.md", "benchmarks/README.md", "benchmarks/RESULTS.md"]
    files += [str(p.relative_to(ROOT)) for p in sorted(NBS.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts]
    return {f: page_of(f) for f in files}


_LINK = re.compile(r"(\]\()(<[^>]+>|[^)\s]+)((?:\s+\"[^\"]*\")?\))")


def rewrite_links(text: str, src: str, pages: dict[str, str]) -> str:
    """Relative links of a markdown text written at repository path `src`, made to work on the site: a link to
    another page of the site points to that page, a link to any other repository file to GitHub."""
    dest_dir = os.path.dirname(pages[src])

    def fix(m):
        target = m.group(2).strip("<>")
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")): return m.group(0)
        path, hash_, anchor = target.partition("#")
        repo = os.path.normpath(os.path.join(os.path.dirname(src), path))
        if repo in pages: new = os.path.relpath(pages[repo], dest_dir or ".")
        elif (ROOT / repo).exists() and not repo.startswith(".."):
            new = GITHUB.replace("/blob/", "/tree/") + repo if (ROOT / repo).is_dir() else GITHUB + repo
        else: return m.group(0)          # left as written: Sphinx reports it as a broken reference
        return m.group(1) + new + hash_ + anchor + m.group(3)
    return _LINK.sub(fix, text)


REMOVED = {"hide", "export", "exporti", "default_exp"}


def _directive(d: dict, k: str) -> str | None:
    v = d.get(k)
    return None if v is None else (" ".join(v) if isinstance(v, list) else str(v)).strip()


def cell_tags(directives: dict, show_doc: bool) -> list[str]:
    "MyST-NB tags for nbdev's cell directives."
    tags = []
    if directives.keys() & REMOVED or _directive(directives, "include") == "false": tags.append("remove-cell")
    if show_doc or _directive(directives, "echo") == "false": tags.append("remove-input")
    if _directive(directives, "output") == "false": tags.append("remove-output")
    # slow and gpu cells are not run for the site (as in `make test`); show_doc cells are filled by fill_show_docs
    if directives.keys() & {"slow", "gpu"} or _directive(directives, "eval") == "false" or show_doc:
        tags.append("skip-execution")
    return tags


def _assigned_names(source: str) -> list[str]:
    "The public names a cell assigns at its top level (`A = ...`, `A, B = ...`, `A: int = ...`)."
    try: body = ast.parse(source).body
    except SyntaxError: return []
    targets = [t for n in body if isinstance(n, (ast.Assign, ast.AnnAssign))
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target])]
    return [t.id for t in targets for t in (t.elts if isinstance(t, ast.Tuple) else [t])
            if isinstance(t, ast.Name) and not t.id.startswith("_")]


def process_notebook(src: str, pages: dict[str, str]) -> tuple[dict, str | None]:
    "nbdev's processing for the site: show_doc cells added, directives as tags, links rewritten."
    from fastcore.nbio import nb2dict
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs, filter_stream_, hide_line, strip_ansi
    proc = NBProcessor(ROOT / src, procs=[add_show_docs, hide_line, filter_stream_, strip_ansi], rm_directives=True)
    module = next((_directive(c.directives_, "default_exp") for c in proc.nb.cells if "default_exp" in c.directives_), None)
    proc.process()
    constants = {}          # cell index -> public names it assigns (exported constants get an API entry too)
    for cell in proc.nb.cells:
        if cell.cell_type == "markdown": cell.source = rewrite_links(cell.source, src, pages)
        if cell.cell_type == "code" and {"export", "exports"} & set(getattr(cell, "directives_", {}) or {}):
            if names := _assigned_names(cell.source): constants[cell.idx_] = names
        if src == "nbs/index.ipynb" and cell.idx_ == 0:     # the landing page has the project's name already
            cell.source = re.sub(r"^# .*", "# Overview", cell.source, count=1)
        if cell.cell_type != "code": continue
        is_doc = bool(getattr(cell, "has_sd", False)) or cell.source.startswith("show_doc(")
        tags = cell_tags(getattr(cell, "directives_", {}) or {}, is_doc)
        if tags: cell.setdefault("metadata", {})["tags"] = tags
        if is_doc: cell["outputs"], cell["execution_count"] = [], None
    nb = nb2dict(proc.nb)
    # nbdev-clean strips the notebook metadata; MyST-NB needs the language to highlight the code
    nb["metadata"].update(kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
                          language_info={"name": "python", "pygments_lexer": "ipython3"})
    for cell in nb["cells"]:
        for k in [k for k in cell if k.endswith("_") or k == "has_sd"]: del cell[k]
        if isinstance(cell["source"], list): cell["source"] = "".join(cell["source"])
    for i in sorted(constants, reverse=True):
        nb["cells"][i + 1:i + 1] = [{"cell_type": "code", "id": f"api-{name}", "source": name, "execution_count": None, "outputs": [],
                                     "metadata": {"tags": ["remove-input", "skip-execution"], "cascade_constant": True}}
                                    for name in constants[i]]
    return nb, module


def _source_link(expr: str, ns: dict) -> str:
    "A link to the line on GitHub where the object shown is defined (nbdev's own link has no line here)."
    import inspect
    try:
        obj = inspect.unwrap(eval(expr, ns))
        obj = obj.fget if isinstance(obj, property) else obj
        path = Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT)
        return f"[source]({GITHUB}{path}#L{inspect.getsourcelines(obj)[1]})"
    except (TypeError, ValueError, OSError):
        return ""


def _api_entry(md: str, expr: str, ns: dict) -> str:
    """show_doc's markdown for MyST: its opening rule goes (docutils allows one only between sections) and its
    Quarto-styled source link is replaced by a plain one with the line number."""
    md = re.sub(r"^\s*---\s*\n", "", md)
    md = re.sub(r"^\[source\]\([^)]*\)(\{[^}]*\})?\s*\n", "", md)
    link = _source_link(expr, ns)
    return md.rstrip() + (f"\n\n{link}\n" if link else "\n")


def fill_show_docs(nb: dict, module: str | None, src: str) -> int:
    "The API entries: every show_doc cell run against the exported module (nothing else of the notebook runs)."
    consts = [c for c in nb["cells"] if c.get("metadata", {}).get("cascade_constant")]
    cells = [c for c in nb["cells"] if c["cell_type"] == "code" and c["source"].startswith("show_doc(")]
    if not cells and not consts: return 0
    if module is None: sys.exit(f"docs: {src} has show_doc cells but no `#| default_exp`")
    from execnb.shell import CaptureShell
    sh = CaptureShell()
    setup = (f"from nbdev.showdoc import show_doc\nimport cascade_lab.{module} as _m\n"
             "globals().update({k: v for k, v in vars(_m).items() if not k.startswith('__')})")
    for cell in [None] + cells:
        code = setup if cell is None else cell["source"]
        outs = sh.run(code)
        if any(o.get("output_type") == "error" for o in outs):
            sys.exit(f"docs: {src}: `{code}` failed:\n" + "\n".join("".join(o.get("traceback", "")) for o in outs))
        if cell is None: continue
        for o in outs:
            md = o.get("data", {}).get("text/markdown")
            if md is not None:
                md = "".join(md) if isinstance(md, list) else md
                o["data"]["text/markdown"] = _api_entry(md, code[len("show_doc("):-1], sh.user_ns)
        cell["outputs"] = [dict(o) for o in outs]
    module_all = set(sh.user_ns["_m"].__dict__.get("__all__", []))
    for c in consts:
        if c["source"] not in module_all: c["metadata"]["tags"] = ["remove-cell", "skip-execution"]; continue
        value = repr(sh.user_ns[c["source"]])
        value = value if len(value) <= 400 else value[:400] + " ..."
        c["outputs"] = [{"output_type": "display_data", "metadata": {},
                         "data": {"text/markdown": f"### {c['source']}\n\n```python\n{c['source']} = {value}\n```\n"}}]
    return len(cells) + len(consts)


# ---------------------------------------------------------------- 3. execution and outputs
def needs_execution(nb: dict, src: str) -> bool:
    "Tutorials, and notebooks whose committed outputs hold a widget or a figure (their state is not committed)."
    if src.startswith("nbs/tutorials/"): return True
    return any(WIDGET_VIEW in o.get("data", {}) or PLOTLY_MIME in o.get("data", {})
               for c in nb["cells"] for o in c.get("outputs", []))


def _package_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "cascade_lab").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts: h.update(str(p.relative_to(ROOT)).encode()); h.update(p.read_bytes())
    return h.hexdigest()


def execute(nb: dict, dest: Path, key: str, use_cache: bool) -> tuple[dict, str]:
    "Run the notebook in a real Jupyter kernel (nbclient), widget state stored; cached by `key`."
    cached = EXEC_CACHE / f"{key}.ipynb"
    if use_cache and cached.exists(): return json.loads(cached.read_text()), "cached"
    import nbformat
    from nbclient import NotebookClient
    t = time.time()
    node = nbformat.from_dict(copy.deepcopy(nb))
    client = NotebookClient(node, timeout=900, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(dest.parent)}})
    client.execute()
    out = json.loads(nbformat.writes(node))
    EXEC_CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(out))
    return out, f"executed in {time.time() - t:.1f} s"


def plotly_div(fig: dict) -> str:
    "A figure as a <div> holding its JSON; _static/cascade_plotly.js draws it with the page's one plotly.js."
    data = json.dumps(fig, separators=(",", ":")).replace("</", "<\\/")
    height = (fig.get("layout") or {}).get("height") or 450
    return (f'<div class="cascade-plotly" style="min-height:{int(height)}px">'
            f'<script type="application/json">{data}</script></div>')


def prune_widget_state(nb: dict) -> None:
    """Keep the state of the widgets the page shows and of those they refer to (`IPY_MODEL_<id>`): the kernel
    also reports every widget a test cell created and never displayed (the explorer's 32k-token checks)."""
    meta = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE)
    if not meta: return
    state = meta.get("state", {})
    todo = [o["data"][WIDGET_VIEW]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
            if WIDGET_VIEW in o.get("data", {})]
    keep = set()
    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state: continue
        keep.add(mid)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid].get("state", {})))
    meta["state"] = {k: v for k, v in state.items() if k in keep}


def finish_outputs(nb: dict) -> None:
    "Figures as divs (a figure's text/plain repr, the whole figure as text, is dropped); unseen widgets' state dropped."
    prune_widget_state(nb)
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            d = o.get("data", {})
            if PLOTLY_MIME in d:
                o["data"] = {"text/html": plotly_div(d[PLOTLY_MIME])}
                o["metadata"] = {}


# ---------------------------------------------------------------- 5. checks of the built site
def api_entries(page_html: str) -> set[str]:
    "The names a built page documents: the headings show_doc writes (rendered as rubrics)."
    return {html.unescape(re.sub(r"<[^>]+>", "", m)).strip()
            for m in re.findall(r'<p class="rubric"[^>]*>(.*?)</p>', page_html, flags=re.S)}


def check_site(pages: dict[str, str]) -> None:
    """Every public name (`__all__`) of every module has its entry on the module's page, and no page with its
    widgets and figures is over 5 MB. Prints each page's weight."""
    import importlib
    problems, weights, checked = [], [], []
    for src, page in pages.items():
        out = HTML / (page.rsplit(".", 1)[0] + ".html")
        if not out.exists(): problems.append(f"{src}: no page {out.relative_to(ROOT)}"); continue
        text = out.read_text()
        weights.append((out.stat().st_size, str(out.relative_to(HTML))))
        if out.stat().st_size > MAX_PAGE: problems.append(f"{out.name}: {out.stat().st_size:,} bytes, over {MAX_PAGE:,}")
        if MODULES.get(src):
            names = set(getattr(importlib.import_module(f"cascade_lab.{MODULES[src]}"), "__all__", []))
            if not names: problems.append(f"{src}: cascade_lab.{MODULES[src]} has no __all__")
            missing = sorted(names - api_entries(text))
            if missing: problems.append(f"{out.name}: no API entry for {', '.join(missing)} (cascade_lab.{MODULES[src]}.__all__)")
            checked.append(len(names))
    for size, name in sorted(weights, reverse=True)[:8]: log(f"{size / 1e6:6.2f} MB  {name}")
    log(f"API entries: {sum(checked)} public names of {len(checked)} modules, each with its entry")
    if len(checked) < MIN_MODULES: problems.append(f"only {len(checked)} module pages found to check the API of")
    if problems: sys.exit("docs: the site fails its checks:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------- the landing page and the build
TUTORIALS = ["quickstart", "routing_study", "thinking_traces", "tir_walkthrough", "kernels", "real_model_gpu",
             "scaling_out"]


def toctrees(pages: dict[str, str]) -> str:
    "The site's navigation, appended to the landing page (the README)."
    docs = [p.rsplit(".", 1)[0] for p in pages.values() if p != "index.md"]
    tut = [d for d in docs if d.startswith("tutorials/")]
    tut = sorted(tut, key=lambda d: (TUTORIALS.index(d[10:]) if d[10:] in TUTORIALS else len(TUTORIALS), d))
    lib = ["overview"] + [pages[s].rsplit(".", 1)[0] for s in sorted(pages)
                          if s.startswith("nbs/") and not s.startswith("nbs/tutorials/") and s != "nbs/index.ipynb"]
    bench = [d for d in docs if d.startswith("benchmarks/")]
    out = ""
    for caption, entries in [("Tutorials", tut), ("The library, notebook by notebook", lib), ("Benchmarks", bench)]:
        out += "\n```{toctree}\n:hidden:\n:caption: " + caption + "\n\n" + "\n".join(entries) + "\n```\n"
    return out


def kernel_env() -> None:
    "What the kernels running the notebooks see (they inherit this process's environment), as in `make test`."
    if not (shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0):
        os.environ.setdefault("TRITON_INTERPRET", "1")
    for k, v in {"PLOTLY_RENDERER": "plotly_mimetype", "TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                 "PYDEVD_DISABLE_FILE_VALIDATION": "1"}.items():
        os.environ.setdefault(k, v)


def build_sources(use_cache: bool, jobs: int) -> dict[str, str]:
    pages = sources()
    if PROC.exists(): shutil.rmtree(PROC)
    kernel_env()
    pkg = _package_hash()
    todo = []
    for src, page in pages.items():
        dest = PROC / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.endswith(".md"):
            text = rewrite_links((ROOT / src).read_text(), src, pages)
            dest.write_text(text + (toctrees(pages) if page == "index.md" else ""))
            continue
        nb, module = process_notebook(src, pages)
        n = fill_show_docs(nb, module, src)
        MODULES[src] = module
        if needs_execution(nb, src):
            # the package, the processed notebook (its API entries included) and how Triton runs
            key = hashlib.sha256((pkg + os.environ.get("TRITON_INTERPRET", "") + json.dumps(nb, sort_keys=True)).encode()).hexdigest()
            todo.append((src, nb, dest, key))
        else:
            finish_outputs(nb)
            dest.write_text(json.dumps(nb, indent=1))
        log(f"{src} -> _proc/{page}" + (f" ({n} API entries)" if n else ""))

    def run(job):
        src, nb, dest, key = job
        out, how = execute(nb, dest, key, use_cache)
        finish_outputs(out)
        dest.write_text(json.dumps(out, indent=1))
        return f"{src}: {how}"
    with cf.ThreadPoolExecutor(max(1, jobs)) as ex:
        for msg in ex.map(run, todo): log(msg)
    return pages


def sphinx_build() -> None:
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", str(DOCS),
           "-d", str(BUILD / "doctrees"), str(PROC), str(HTML)]
    log(" ".join(cmd[2:]))
    r = subprocess.run(cmd, cwd=ROOT)
    if r.returncode: sys.exit(f"docs: Sphinx failed (exit {r.returncode}); warnings count as errors, see above")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-exec-cache", action="store_true", help="re-run every executed notebook")
    ap.add_argument("--jobs", type=int, default=2, help="notebooks executed at once")
    a = ap.parse_args(argv)
    t = time.time()
    # Kernels run `jobs` at once; each gets its share of the cores for torch's OpenMP threads. Oversubscribed, the
    # spinning threads of two kernels decoding token by token slowed one notebook tenfold (past the cell timeout).
    threads = str(max(1, (os.cpu_count() or 1) // max(1, a.jobs)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"): os.environ.setdefault(var, threads)
    vendor_assets()
    pages = build_sources(not a.no_exec_cache, a.jobs)
    sphinx_build()
    check_site(pages)
    log(f"built {HTML.relative_to(ROOT)}/index.html in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
