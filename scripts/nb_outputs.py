#!/usr/bin/env python
"""Run the notebooks as `nbdev-test` does, and check (or write) the outputs committed in them.

THE RULE
  Notebooks are committed WITH the outputs of their cells, so every printed example shows on the web and in
  a plain viewer. `make test` re-executes every notebook and fails when a committed output is not what the
  cell prints today. Precisely, for every code cell that `nbdev-test` runs:
  - its committed outputs must equal the fresh ones, compared normalised: stdout and stderr each joined into
    one text, then every `text/*` representation (`text/plain`, `text/html`, ...) of each displayed or returned
    value, then errors (name and message); images and other binary data by type only, not by bytes;
  - a cell that produces output must have it committed, and a cell that produces none must have none
    (outputs cannot silently go missing, nor linger after the code changed);
  - no single output may exceed 20 kB of text (200 kB for an image): a longer one is an error; print less.
  Not subject to the check:
  - cells flagged `#| slow` or `#| gpu` (`tst_flags` in pyproject's [tool.nbdev]): they are not run here, so
    `--write` leaves whatever output they have alone (`--flags "slow gpu"` runs and checks them too);
    likewise cells with `#| eval: false` and notebooks with `skip_exec`, which `nbdev-test` never runs;
  - cells marked `#| volatile`: their output legitimately changes from run to run (timings, temporary paths,
    process ids, ...). Their output is still committed and shown; `--check` only requires that such a cell has
    output committed if and only if it produces output. `--write` refreshes it like any other cell's.
  Progress bars need no marker: they are switched off while the notebooks run (HF_HUB_DISABLE_PROGRESS_BARS=1,
  TQDM_DISABLE=1), since each draws timings with carriage returns. Memory addresses need none either:
  `nbdev-clean` (clean_ids) strips " at 0x..." from text outputs, and the fresh outputs go through the same
  cleaning before they are compared or written.
  The committed outputs are those of a machine without a GPU (Triton under TRITON_INTERPRET=1): a cell that
  prints which device it found prints something else where there is a GPU, so write them without one.

  Why a custom `#| volatile` and not Quarto's `#| output: false`: the point is that readers see the outputs,
  and a timing or a path is still a useful example, so hiding it would defeat the rule; `output: false` is a
  display choice (one that this project's Sphinx/MyST-NB docs do not even honour), which would silently
  exempt a cell from checking whenever an author only meant to hide its output. One marker, one meaning.
  nbdev handles it like `#| slow`: a cell directive that the export ignores.

USAGE (from the repository root)
  python scripts/nb_outputs.py [--check] [NOTEBOOK ...]   # default; all notebooks of nbs/ when none given
  python scripts/nb_outputs.py --write [NOTEBOOK ...]     # store the fresh outputs in the notebooks
  options as nbdev-test's: --flags "slow gpu", --n-workers N, --timing, --cell-timeout S

  `--check` replaces `nbdev-test` in `make test`: each notebook runs once, in parallel workers, through nbdev's
  own `nbdev.test.test_nb` (same skip flags, IN_TEST, cell timeout, working directory, sys.path), and a failing
  cell fails the run with its traceback, as with nbdev-test. Then the outputs are compared.
  `--write` runs the notebooks the same way, writes the fresh outputs of the cells that ran, and cleans the
  notebooks exactly as `nbdev-clean` does, so `nbdev-clean` afterwards changes nothing. A notebook with a
  failing cell or an oversized output is not written.
  Without a GPU (no working `nvidia-smi`) TRITON_INTERPRET=1 is set, as scripts/test.sh does, so outputs are
  produced the same way however the script is started.
"""
import argparse
import copy
import difflib
import os
import shutil
import subprocess
import sys
import time
from json import dumps, loads
from pathlib import Path

MAX_TEXT = 20_000      # characters of one text output (a stream, or one text/* representation)
MAX_BINARY = 200_000   # characters (base64) of one image or other binary representation
VOLATILE = "volatile"  # the directive: `#| volatile`
DIFF_LINES = 20        # lines of diff shown per stale cell
# Progress bars are timings (elapsed, it/s) drawn with carriage returns: noise on a page and different on every
# run. They are off while the notebooks run: transformers' and huggingface_hub's bars, and tqdm's default.
NO_PROGRESS_BARS = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
# A plotly figure shown by a cell is stored as its JSON (`application/vnd.plotly.v1+json`, which JupyterLab and the
# docs site draw), not as HTML that inlines all of plotly.js (4.8 MB) into the output; outside a Jupyter kernel
# plotly would otherwise pick that HTML renderer or try to open a web browser.
PLOTLY = {"PLOTLY_RENDERER": "plotly_mimetype"}


def _has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


# ---------------------------------------------------------------- running (in the worker processes)

def run_nb(fn, skip_flags, force_flags, basepath, cell_timeout, cell_timing_min=None):
    """Run notebook `fn` with nbdev's own `test_nb`, returning `(passed, seconds, {cell id: fresh outputs})`.
    `test_nb(save=True)` hands the executed notebook to `nbdev.test.write_nb`; that one name is swapped, in this
    worker only, for a function that keeps the notebook instead of writing it."""
    import nbdev.test as nbt
    from fastcore.nbio import jupyter_json_default, nb2dict
    kept = []
    orig = nbt.write_nb
    nbt.write_nb = lambda nb, path: kept.append(nb)
    try:
        passed, secs = nbt.test_nb(fn, skip_flags=skip_flags, force_flags=force_flags, basepath=basepath,
                                   save=True, cell_timeout=cell_timeout, cell_timing_min=cell_timing_min)
    finally: nbt.write_nb = orig
    if not passed: return False, secs, {}
    if not kept:
        raise RuntimeError("nbdev.test.test_nb(save=True) no longer saves through nbdev.test.write_nb: "
                           "scripts/nb_outputs.py needs updating to this nbdev version")
    ran = {c.id for c in nbt.nb_test_cells(fn, skip_flags, force_flags)}
    outs = {c.id: loads(dumps(nb2dict(list(c.get("outputs", []))), default=jupyter_json_default))
            for c in kept[0].cells if c.id in ran}
    return True, secs, outs


# ---------------------------------------------------------------- comparing

def _text(v): return "".join(v) if isinstance(v, list) else (v if isinstance(v, str) else dumps(v, sort_keys=True))


def _is_text_mime(mime): return mime.startswith("text/")


def normalise(outputs):
    """The comparable form of a cell's outputs: `[(label, text)]`. Streams first, each joined into one text
    (stdout, then stderr), then each displayed or returned value's representations, then errors. Text
    representations keep their text; images and other data are compared by type only."""
    streams, items = {}, []
    for o in outputs:
        kind = o.get("output_type")
        if kind == "stream": streams[o.get("name", "stdout")] = streams.get(o.get("name", "stdout"), "") + _text(o.get("text", ""))
        elif kind in ("execute_result", "display_data"):
            for mime, v in sorted(o.get("data", {}).items()):
                items.append((f"{kind} {mime}", _text(v) if _is_text_mime(mime) else f"<{mime} data>"))
        elif kind == "error": items.append(("error", f"{o.get('ename', '')}: {o.get('evalue', '')}"))
        else: items.append((str(kind), dumps(o, sort_keys=True)))
    names = sorted(streams, key=lambda n: ({"stdout": 0, "stderr": 1}.get(n, 2), n))
    return [(n, streams[n]) for n in names] + items


def render(norm):
    "`normalise`'s result as one text, for diffs"
    return "".join(f"[{label}]\n{text}" + ("" if text.endswith("\n") else "\n") for label, text in norm)


def oversized(outputs):
    "Descriptions of the outputs in `outputs` over the size limits"
    res, streams = [], {}
    for o in outputs:
        if o.get("output_type") == "stream":
            streams[o.get("name")] = streams.get(o.get("name"), 0) + len(_text(o.get("text", "")))
        for mime, v in o.get("data", {}).items():
            n, cap = len(_text(v)), MAX_TEXT if _is_text_mime(mime) else MAX_BINARY
            if n > cap: res.append(f"{mime} of {n/1000:.0f} kB (limit {cap//1000} kB)")
    res += [f"{name} of {n/1000:.0f} kB (limit {MAX_TEXT//1000} kB)" for name, n in streams.items() if n > MAX_TEXT]
    return res


def _is_volatile(cell):
    from fastcore.nbio import NbCell
    return VOLATILE in NbCell(0, copy.deepcopy(cell)).directives


def _diff(old, new):
    lines = list(difflib.unified_diff(render(old).splitlines(), render(new).splitlines(),
                                      "committed", "fresh", lineterm="", n=1))
    cut = len(lines) - DIFF_LINES
    return "\n".join(["      " + l for l in lines[:DIFF_LINES]] + ([f"      ... ({cut} more diff lines)"] if cut > 0 else []))


def _clean(nb, cfg):
    "Clean notebook dict `nb` in place exactly as `nbdev-clean` does with this project's [tool.nbdev]"
    from nbdev.clean import clean_nb
    clean_nb(nb, False, cfg.get("allowed_metadata_keys") or [], cfg.get("allowed_cell_metadata_keys") or [],
             cfg.clean_ids, cfg.get("allowed_out_metadata_keys") or [])


def with_fresh(raw, fresh, cfg):
    "A cleaned copy of notebook dict `raw` whose cells that ran hold their `fresh` outputs"
    nb = copy.deepcopy(raw)
    for c in nb["cells"]:
        if c.get("cell_type") == "code" and c.get("id") in fresh: c["outputs"] = copy.deepcopy(fresh[c["id"]])
    _clean(nb, cfg)
    return nb


def problems(raw, fresh, cfg):
    """What is wrong with the outputs committed in notebook dict `raw`, given the `fresh` outputs of the cells
    that ran ({cell id: outputs}): a list of messages, one per cell."""
    committed, new = copy.deepcopy(raw), with_fresh(raw, fresh, cfg)
    _clean(committed, cfg)
    res = []
    for old_c, new_c in zip(committed["cells"], new["cells"]):
        if old_c.get("cell_type") != "code": continue
        cid = old_c.get("id")
        if big := oversized(new_c.get("outputs", [])) + oversized(old_c.get("outputs", [])):
            res.append(f"cell {cid}: output too large, print less: {'; '.join(dict.fromkeys(big))}")
            continue
        if cid not in fresh: continue
        old, now = normalise(old_c.get("outputs", [])), normalise(new_c.get("outputs", []))
        if old == now: continue
        if _is_volatile(old_c):
            if bool(old) == bool(now): continue
            res.append(f"cell {cid} (volatile): " + ("produces output but none is committed" if now
                       else "has committed output but no longer produces any"))
        elif not old: res.append(f"cell {cid}: produces output but none is committed\n{_diff(old, now)}")
        elif not now: res.append(f"cell {cid}: has committed output but no longer produces any\n{_diff(old, now)}")
        else: res.append(f"cell {cid}: committed output differs from a fresh run\n{_diff(old, now)}")
    return res


# ---------------------------------------------------------------- the command

def _files(paths, cfg):
    "The notebooks to run, as `nbdev-test` picks them (nbglob, `.notest` folders left out)"
    from nbdev.doclinks import nbglob
    if not paths: return sorted(p.absolute() for p in nbglob(None, as_path=True) if not (p.parent/".notest").exists())
    res = []
    for p in map(Path, paths):
        res += sorted(x.absolute() for x in nbglob(p, as_path=True)) if p.is_dir() else [p.absolute()]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail when committed outputs are not current (default)")
    mode.add_argument("--write", action="store_true", help="write the fresh outputs into the notebooks")
    ap.add_argument("notebooks", nargs="*", help="notebooks or folders (default: all of nbs_path)")
    ap.add_argument("--flags", default="", help="space-separated tst_flags to run anyway, e.g. 'slow gpu'")
    ap.add_argument("--n-workers", type=int, default=None, help="parallel workers (default as nbdev-test)")
    ap.add_argument("--timing", action="store_true", help="print each notebook's run time")
    ap.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: config cell_timeout)")
    a = ap.parse_args(argv)

    if not _has_gpu(): os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.update(NO_PROGRESS_BARS)
    for k, v in PLOTLY.items(): os.environ.setdefault(k, v)
    from fastcore.parallel import parallel
    from fastcore.xtras import working_directory
    from fastcore.nbio import write_nb
    from nbdev.config import get_config, import_obj
    from nbdev.test import nb_test_cells

    cfg = get_config(Path(a.notebooks[0]).resolve() if a.notebooks else None)
    if cfg.clear_all: sys.exit("nb_outputs: clear_all is set in [tool.nbdev], so nbdev-clean deletes every output; unset it")
    skip_flags = cfg.tst_flags.split() if isinstance(cfg.tst_flags, str) else list(cfg.tst_flags or [])
    force_flags = a.flags.split()
    files = _files(a.notebooks, cfg)
    if not files: return print("nb_outputs: no notebooks found")
    if missing := [f for f in files if not f.exists()]: sys.exit(f"nb_outputs: no such notebook: {', '.join(map(str, missing))}")
    cell_timeout = a.cell_timeout if a.cell_timeout is not None else cfg.cell_timeout
    n_workers = a.n_workers if a.n_workers is not None else (0 if len(files) == 1 else min(os.cpu_count() or 1, 8))
    # each worker gets its share of the cores for torch's OpenMP threads: oversubscribed, two workers decoding token
    # by token ran 5x slower each (their threads spin against each other); set before any worker imports torch
    threads = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"): os.environ.setdefault(var, threads)

    texts = {f: f.read_text(encoding="utf-8") for f in files}   # as they were when they ran
    t0 = time.time()
    wd = cfg.nbs_path if (cfg.nbs_path and cfg.nbs_path.exists()) else Path.cwd()
    with working_directory(wd):
        if setup := cfg.get("test_setup"): import_obj(setup)([c for f in files for c in nb_test_cells(f, skip_flags, force_flags)])
        try:
            results = list(parallel(run_nb, files, skip_flags=skip_flags, force_flags=force_flags, n_workers=n_workers,
                                    basepath=cfg.config_path, cell_timeout=cell_timeout or None,
                                    cell_timing_min=cfg.get("cell_timing_min"), pause=0.01))
        except KeyboardInterrupt:
            sys.stderr.write("\nnb_outputs interrupted; in-flight notebook stacks shown above\n")
            sys.exit(130)
    run_s = time.time() - t0

    failed, bad, written = [], {}, []
    for f, (passed, secs, fresh) in zip(files, results):
        if not passed: failed.append(f); continue
        if f.read_text(encoding="utf-8") != texts[f]:
            bad[f] = ["the notebook changed on disk while it ran (an editor saved it?): run again"]; continue
        raw = loads(texts[f])
        if no_id := [i for i, c in enumerate(raw["cells"]) if c.get("cell_type") == "code" and not c.get("id")]:
            bad[f] = [f"code cells {no_id} have no id: run nbdev-clean first"]; continue
        if a.write:
            new = with_fresh(raw, fresh, cfg)
            if big := [f"cell {c.get('id')}: output too large, print less: {'; '.join(o)}"
                       for c in new["cells"] if c.get("cell_type") == "code" and c.get("id") in fresh
                       and (o := oversized(c.get("outputs", [])))]:
                bad[f] = big; continue
            write_nb(new, f)
            if f.read_text(encoding="utf-8") != texts[f]: written.append(f)
        elif p := problems(raw, fresh, cfg): bad[f] = p

    if a.timing:
        for f, (_, secs, _) in sorted(zip(files, results), key=lambda o: -o[1][1]): print(f"{f.name}: {secs:.0f} secs")
    for f, msgs in bad.items():
        print(f"\n{_rel(f)}:", file=sys.stderr)
        for m in msgs: print("  " + m, file=sys.stderr)
    if failed:
        print("\nnbdev Tests Failed On The Following Notebooks:\n" + "=" * 50 + "\n\t" +
              "\n\t".join(f.name for f in failed), file=sys.stderr)
    if bad and not a.write:
        print(f"\nnb_outputs: the committed outputs of {len(bad)} notebook(s) are not current. If the new outputs are "
              f"right, run\n    .venv/bin/python scripts/nb_outputs.py --write {' '.join(_rel(f) for f in bad)}\n"
              f"review the diff and commit it. Mark a cell whose output changes from run to run `#| volatile`.",
              file=sys.stderr)
    what = (f"wrote {len(written)} notebook(s), {len(files) - len(written) - len(failed) - len(bad)} unchanged"
            if a.write else f"checked {len(files) - len(failed)} notebook(s)")
    print(f"nb_outputs: ran {len(files)} notebook(s) in {run_s:.0f}s; {what}"
          + (f"; {len(failed)} failed" if failed else "") + (f"; {len(bad)} with output problems" if bad else ""))
    if failed or bad: sys.exit(1)
    if not a.write: print("Success.")


def _rel(f):
    try: return str(Path(f).resolve().relative_to(Path.cwd().resolve()))
    except ValueError: return str(f)


if __name__ == "__main__":
    # Run as the module `nb_outputs`, not as `__main__`: the workers find `run_nb` by its module's name, and
    # IPython (each notebook's shell) replaces `sys.modules["__main__"]` in them.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import nb_outputs
    nb_outputs.main()
