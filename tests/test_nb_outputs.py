"""scripts/nb_outputs.py, the check that notebooks are committed with current outputs, on small notebooks in a
throwaway nbdev project (tmp_path): the command is run as `make test` runs it, in a subprocess."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nb_outputs.py"
NBDEV_CLEAN = Path(sys.executable).parent / "nbdev-clean"


def _load():
    spec = importlib.util.spec_from_file_location("nb_outputs_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


nbo = _load()


def code(cid, src, outputs=()):
    return {"cell_type": "code", "execution_count": None, "id": cid, "metadata": {}, "outputs": list(outputs),
            "source": src.splitlines(True)}


def stdout(text): return {"name": "stdout", "output_type": "stream", "text": text.splitlines(True)}


def result(text): return {"data": {"text/plain": text.splitlines(True)}, "execution_count": None, "metadata": {},
                          "output_type": "execute_result"}


@pytest.fixture
def proj(tmp_path):
    "An nbdev project with the repository's test flags; write notebooks with `proj.nb(name, *cells)`"
    (tmp_path / "pyproject.toml").write_text('[tool.nbdev]\nnbs_path = "nbs"\nlib_path = "mylib"\n'
                                             'tst_flags = "slow gpu"\nclean_ids = true\njupyter_hooks = false\n')
    (tmp_path / "nbs").mkdir()
    (tmp_path / "mylib").mkdir()

    class P:
        root = tmp_path

        def nb(self, name, *cells):
            p = tmp_path / "nbs" / name
            p.write_text(json.dumps({"cells": list(cells), "metadata": {"kernelspec": {
                "display_name": "python3", "language": "python", "name": "python3"}}, "nbformat": 4,
                "nbformat_minor": 5}, indent=1))
            return p

        def run(self, *args):
            r = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=tmp_path, capture_output=True, text=True,
                               timeout=300)
            r.out = r.stdout + r.stderr
            return r

        def cells(self, name):
            return {c["id"]: c for c in json.loads((tmp_path / "nbs" / name).read_text())["cells"]}
    return P()


# ------------------------------------------------------------------------------- the comparison itself

def test_normalise_joins_streams_and_compares_images_by_type():
    # Jupyter saves a cell's prints as several stream chunks, interleaved with displays; a fresh run gives one each
    jupyter = [stdout("a\n"), {"name": "stderr", "output_type": "stream", "text": ["w\n"]},
               {"data": {"image/png": "AAAA\n", "text/plain": ["<Figure>"]}, "metadata": {}, "output_type": "display_data"},
               stdout("b\n")]
    fresh = [stdout("a\nb\n"), {"name": "stderr", "output_type": "stream", "text": "w\n"},
             {"data": {"image/png": "BBBBBBBB\n", "text/plain": "<Figure>"}, "metadata": {}, "output_type": "display_data"}]
    assert nbo.normalise(jupyter) == nbo.normalise(fresh)
    assert nbo.normalise([stdout("a\n")]) != nbo.normalise([stdout("a\n"), stdout("c\n")])
    assert nbo.normalise([result("1")]) != nbo.normalise([result("2")])
    html = lambda h: {"data": {"text/html": h, "text/plain": "x"}, "metadata": {}, "output_type": "display_data"}
    assert nbo.normalise([html("<b>1</b>")]) != nbo.normalise([html("<b>2</b>")])
    err = lambda v: {"output_type": "error", "ename": "ValueError", "evalue": v, "traceback": ["..."]}
    assert nbo.normalise([err("a")]) != nbo.normalise([err("b")])


def test_oversized():
    assert nbo.oversized([stdout("x" * 100)]) == []
    assert nbo.oversized([stdout("x" * 15_000), stdout("y" * 15_000)])    # one stream, 30 kB in all
    assert nbo.oversized([result("x" * (nbo.MAX_TEXT + 1))])
    assert nbo.oversized([{"data": {"image/png": "A" * 100_000}, "metadata": {}, "output_type": "display_data"}]) == []


# ------------------------------------------------------------------------------- the command

def test_write_then_check_passes_and_is_stable(proj):
    p = proj.nb("a.ipynb",
                code("c1", "x = 6 * 7\nprint('x is', x)"),
                code("c2", "x"),
                code("c3", "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))"),
                code("c4", "object()"),                         # a memory address: nbdev-clean strips it
                code("c5", "y = 1"))                            # no output at all
    w = proj.run("--write")
    assert w.returncode == 0, w.out
    cells = proj.cells("a.ipynb")
    assert nbo.normalise(cells["c1"]["outputs"]) == [("stdout", "x is 42\n")]
    assert nbo.normalise(cells["c2"]["outputs"]) == [("execute_result text/plain", "42")]
    assert ("display_data text/html", "<b>bold</b>") in nbo.normalise(cells["c3"]["outputs"])
    assert nbo.normalise(cells["c4"]["outputs"]) == [("execute_result text/plain", "<object>")]
    assert cells["c5"]["outputs"] == []
    first = p.read_bytes()
    assert proj.run("--write").returncode == 0
    assert p.read_bytes() == first                              # a second --write changes nothing
    subprocess.run([str(NBDEV_CLEAN)], cwd=proj.root, check=True)
    assert p.read_bytes() == first                              # nor does nbdev-clean: it keeps the outputs
    c = proj.run("--check")
    assert c.returncode == 0, c.out
    assert "Success." in c.out


def test_stale_output_is_caught(proj):
    proj.nb("a.ipynb", code("keepme", "print('same')", [stdout("same\n")]),
            code("stale1", "print(1 + 2)", [stdout("4\n")]))
    r = proj.run("--check")
    assert r.returncode == 1, r.out
    assert "nbs/a.ipynb" in r.out and "cell stale1: committed output differs" in r.out
    assert "-4" in r.out and "+3" in r.out                      # the diff
    assert "keepme" not in r.out
    assert "--write nbs/a.ipynb" in r.out                       # says how to fix it


def test_missing_output_is_caught(proj):
    proj.nb("a.ipynb", code("bare1", "'hello'"))
    r = proj.run()                                              # --check is the default
    assert r.returncode == 1, r.out
    assert "cell bare1: produces output but none is committed" in r.out and "+'hello'" in r.out


def test_output_the_cell_no_longer_produces_is_caught(proj):
    proj.nb("a.ipynb", code("gone1", "z = 1", [stdout("old text\n")]))
    r = proj.run("--check")
    assert r.returncode == 1, r.out
    assert "cell gone1: has committed output but no longer produces any" in r.out


def test_volatile_cell_is_not_compared(proj):
    proj.nb("a.ipynb", code("vol1", "#| volatile\nimport time\nprint(time.time())", [stdout("12.5\n")]),
            code("vol2", "import os\nos.getpid()", [result("0")]))
    r = proj.run("--check")
    assert r.returncode == 1, r.out                             # vol2 has no marker
    assert "vol1" not in r.out and "cell vol2: committed output differs" in r.out
    proj.nb("a.ipynb", code("vol1", "#| volatile\nimport time\nprint(time.time())", [stdout("12.5\n")]))
    assert proj.run("--check").returncode == 0


def test_volatile_cell_must_still_have_output(proj):
    proj.nb("a.ipynb", code("vol1", "#| volatile\nimport time\nprint(time.time())"))
    r = proj.run("--check")
    assert r.returncode == 1, r.out
    assert "cell vol1 (volatile): produces output but none is committed" in r.out


def test_slow_and_gpu_cells_are_not_run(proj):
    marker = proj.root / "ran.txt"
    p = proj.nb("a.ipynb", code("fast1", "print('fast')"),
                code("slow1", f"#| slow\nopen({str(marker)!r}, 'w').write('x')\nprint('slow')", [stdout("from a slow run\n")]),
                code("gpu1", "#| gpu\nraise RuntimeError('needs a GPU')"))
    r = proj.run("--write")
    assert r.returncode == 0, r.out
    assert not marker.exists()
    cells = proj.cells("a.ipynb")
    assert nbo.normalise(cells["fast1"]["outputs"]) == [("stdout", "fast\n")]
    assert nbo.normalise(cells["slow1"]["outputs"]) == [("stdout", "from a slow run\n")]   # left alone
    assert cells["gpu1"]["outputs"] == []
    assert proj.run("--check").returncode == 0
    # --flags runs them, as nbdev-test's: the slow cell's output is then stale, the gpu cell fails
    r = proj.run("--check", "--flags", "slow")
    assert marker.exists() and r.returncode == 1 and "cell slow1: committed output differs" in r.out
    r = proj.run("--check", "--flags", "gpu")
    assert r.returncode == 1 and "needs a GPU" in r.out
    assert p.exists()


def test_failing_cell_fails_the_run_with_its_error(proj):
    p = proj.nb("bad.ipynb", code("ok1", "print('before')"),
                code("boom1", "def f(): raise ValueError('boom-123')\nf()"),
                code("after1", "print('after')"))
    proj.nb("good.ipynb", code("g1", "print('fine')"))
    before = p.read_bytes()
    for mode in ("--check", "--write"):
        r = proj.run(mode, "--n-workers", "2")
        assert r.returncode == 1, r.out
        assert "ValueError" in r.out and "boom-123" in r.out    # the cell's error, as nbdev-test shows it
        assert "Failed On The Following Notebooks" in r.out and "bad.ipynb" in r.out
    assert p.read_bytes() == before                             # a failing notebook is not written
    assert nbo.normalise(proj.cells("good.ipynb")["g1"]["outputs"]) == [("stdout", "fine\n")]


def test_oversized_output_is_an_error(proj):
    p = proj.nb("a.ipynb", code("big1", "print('x' * 30_000)"), code("big2", "'y' * 30_000"))
    before = p.read_bytes()
    r = proj.run("--write")
    assert r.returncode == 1 and "cell big1: output too large, print less: stdout of 30 kB" in r.out, r.out
    assert "cell big2: output too large, print less: text/plain of 30 kB" in r.out
    assert p.read_bytes() == before
    r = proj.run("--check")
    assert r.returncode == 1 and "cell big1: output too large" in r.out and "cell big2: output too large" in r.out


def test_parallel_workers_and_a_subset(proj):
    for i in range(3): proj.nb(f"n{i}.ipynb", code(f"k{i}", f"print({i} * 10)"))
    r = proj.run("--write", "--n-workers", "2", "--timing")
    assert r.returncode == 0, r.out
    assert all(f"n{i}.ipynb:" in r.out for i in range(3))       # --timing
    for i in range(3): assert nbo.normalise(proj.cells(f"n{i}.ipynb")[f"k{i}"]["outputs"]) == [("stdout", f"{i * 10}\n")]
    proj.nb("n1.ipynb", code("k1", "print('changed')"))
    assert proj.run("--check", "nbs/n0.ipynb", "nbs/n2.ipynb").returncode == 0   # only the named notebooks
    r = proj.run("--check", "--n-workers", "2")
    assert r.returncode == 1 and "n1.ipynb" in r.out and "cell k1:" in r.out


def test_a_notebook_saved_while_it_ran_is_not_written(proj):
    # an editor saving the notebook during the run: its outputs would no longer match its source
    p = proj.nb("a.ipynb", code("e1", "print('hi')"), code("e2", "open('a.ipynb', 'a').write(' ')"))
    r = proj.run("--write")
    assert r.returncode == 1 and "changed on disk while it ran" in r.out, r.out
    assert '"outputs": []' in p.read_text() and "hi" not in "".join(map(str, proj.cells("a.ipynb")["e1"]["outputs"]))
