"""The tree passes the linter and the formatter configured in pyproject ([tool.ruff])."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ruff", reason="ruff is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"]
)
def test_ruff(args):
    run = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, f"ruff {' '.join(args)}:\n{run.stdout}{run.stderr}"
