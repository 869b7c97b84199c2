"""The Makefile as a new user meets it: the interpreter is checked before pip runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


def test_a_python_older_than_required_is_named_before_anything_is_installed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = make("demo", f"PYTHON={sys.executable}", "MIN_PYTHON=99.0", f"VENV={venv}")
    assert done.returncode != 0
    version = "Python {}.{}.{}".format(*sys.version_info[:3])
    assert f"avalon-worker needs Python >= 99.0, and '{sys.executable}' is {version};" in done.stderr
    assert "e.g. make demo PYTHON=python3.12" in done.stderr
    assert not venv.exists(), "nothing was installed"


def test_a_missing_interpreter_is_named_too(tmp_path: Path) -> None:
    done = make("test", "PYTHON=no-such-python3", f"VENV={tmp_path / 'venv'}")
    assert done.returncode != 0
    assert "avalon-worker needs Python >= 3.10, and 'no-such-python3' is not a working Python;" in done.stderr


def test_the_makefile_and_pyproject_agree_on_the_oldest_python() -> None:
    makefile = re.search(r"^MIN_PYTHON \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    pyproject = re.search(r'^requires-python = ">=(\S+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert makefile and pyproject and makefile[1] == pyproject[1]
