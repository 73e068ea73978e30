"""Shared test setup. Without a GPU the Triton kernels can only run under the interpreter, which triton
decides when a kernel is decorated: so the variable is set here, before any test module imports triton."""
import os
import shutil
import subprocess


def _has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


if not _has_gpu():
    os.environ.setdefault("TRITON_INTERPRET", "1")
