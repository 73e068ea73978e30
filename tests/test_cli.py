"""The `cascade-lab` console command, run as a user runs it: the installed entry point in a subprocess."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("cascade-lab", path=str(Path(sys.executable).parent))


def run(*args, timeout=120):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


def test_entry_point_is_installed():
    assert EXE, f"no cascade-lab script next to {sys.executable}: install the package (make test does)"


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0 and "usage: cascade-lab" in r.stdout and "demo" in r.stdout


def test_version():
    from cascade_lab import __version__
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cascade-lab {__version__}"


def test_demo_shows_the_format_and_round_trips():
    r = run("demo")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # both generation prompts of the seed card, the tool prompt, the parsed call and the round trip
    assert "<|im_start|>assistant\\n<think>\\n'" in out and "<|im_start|>assistant\\n<think></think>'" in out
    assert "<name>stateful_python_code_exec</name>" in out
    assert "tool call         : stateful_python_code_exec(code=" in out
    assert "byte for byte: True" in out and r.stderr == ""


@pytest.mark.parametrize("args, needle", [((), "usage: cascade-lab"), (("nosuch",), "invalid choice: 'nosuch'"),
                                          (("demo", "--bogus"), "unrecognized arguments: --bogus")])
def test_bad_usage_exits_2_with_a_message(args, needle):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr and r.stdout == ""


def test_python_dash_m_is_not_required_but_main_is_importable():
    # the entry point is a plain function: notebooks and scripts can call it
    r = subprocess.run([sys.executable, "-c", "from cascade_lab.cli import main; raise SystemExit(main(['demo']))"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "round trip" in r.stdout
