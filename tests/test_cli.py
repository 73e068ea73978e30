"""The `cascade-lab` console command, run as a user runs it: the installed entry point in a subprocess."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cascade_lab.demo import DEMO_DIR

EXE = shutil.which("cascade-lab", path=str(Path(sys.executable).parent))


def run(*args, timeout=120):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


def test_entry_point_is_installed():
    assert EXE, f"no cascade-lab script next to {sys.executable}: install the package (make test does)"


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0 and "usage: cascade-lab" in r.stdout
    for cmd in ("demo", "format", "train-demo", "eval-demo"): assert cmd in r.stdout


def test_version():
    from cascade_lab import __version__
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cascade-lab {__version__}"


def test_format_shows_the_format_and_round_trips():
    r = run("format")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # both generation prompts of the model card, the tool prompt, the parsed call and the round trip
    assert "<|im_start|>assistant\\n<think>\\n'" in out and "<|im_start|>assistant\\n<think></think>'" in out
    assert "<name>stateful_python_code_exec</name>" in out
    assert "tool call         : stateful_python_code_exec(code=" in out
    assert "byte for byte: True" in out and r.stderr == ""


def test_demo_solves_a_problem_with_the_tool():
    # the main job (`make demo`): the shipped demo model, its Python tool, every step shown
    r = run("demo")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "NOT Nemotron-Cascade-2" in out
    for part in ("=== problem", "step 1: thinking", "step 1: tool call stateful_python_code_exec", "step 1: tool output",
                 "=== answer", "boxed answer:"):
        assert part in out, part
    assert "(expected " in out and ": correct)" in out       # the held-out problem it shows is one it solves
    assert "falling back" not in r.stderr                     # transformers' notes are kept out of the way


def test_demo_with_a_question_of_ones_own():
    r = run("demo", "--question", "Ava has 20 marbles, buys 15 more and gives 5 to a friend. How many marbles does Ava have now?")
    # the whole path runs on one's own question: a tool call, its output, a boxed answer (whether the small demo
    # model gets an unseen wording right is the evaluation's business, not this test's)
    assert r.returncode == 0 and "tool call stateful_python_code_exec" in r.stdout and "tool output" in r.stdout
    assert re.search(r"boxed answer: \d+", r.stdout), r.stdout[-400:]


@pytest.mark.parametrize("args, needle", [((), "usage: cascade-lab"), (("nosuch",), "invalid choice: 'nosuch'"),
                                          (("format", "--bogus"), "unrecognized arguments: --bogus"),
                                          (("eval-demo", "-n", "x"), "invalid int value: 'x'")])
def test_bad_usage_exits_2_with_a_message(args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr and r.stdout == ""


def test_eval_demo_measures_the_shipped_model():
    # the measurement (cascade_lab.demo_eval) on one held-out problem; without --write nothing is written
    import json
    before = {f.name: f.stat().st_mtime_ns for f in DEMO_DIR.iterdir()}
    r = run("eval-demo", "-n", "1", timeout=300)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    res = json.loads(r.stdout)
    assert res["n"] == 1 and len(res["gates"]) == 7 and r.returncode == (0 if all(res["gates"].values()) else 1)
    assert {f.name: f.stat().st_mtime_ns for f in DEMO_DIR.iterdir()} == before


def test_a_missing_model_directory_is_one_clear_line(tmp_path):
    r = run("eval-demo", "--model", str(tmp_path / "nope"), "-n", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("cascade-lab eval-demo: no checkpoint at") and "does not exist" in r.stderr


def test_main_is_importable():
    # the entry point is a plain function: notebooks and scripts can call it
    r = subprocess.run([sys.executable, "-c", "from cascade_lab.cli import main; raise SystemExit(main(['format']))"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "round trip" in r.stdout
