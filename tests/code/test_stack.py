"""The installed stack is the pinned one, and horovod was built with PyTorch and Gloo."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def test_installed_versions_match_the_constraints_file():
    expected = pins()
    assert {"torch", "pyspark", "pyarrow", "numpy", "pandas", "petastorm", "deltalake"} <= set(expected)
    installed = {name: version(name).split("+")[0] for name in expected}
    assert installed == expected


def test_the_pinned_libraries_import_together():
    out = subprocess.run([sys.executable, "-c", "import pyspark, torch, petastorm, horovod.torch, deltalake; "
                          "import petastorm.pytorch, pyarrow.filesystem; print('ok')"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_horovod_check_build_shows_pytorch_and_gloo():
    out = subprocess.run([str(Path(sys.executable).parent / "horovodrun"), "--check-build"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"\[X\] PyTorch", out.stdout) and re.search(r"\[X\] Gloo", out.stdout)
