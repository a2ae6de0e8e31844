"""The `mia` command (mia/cli.py): declared as a console script, the same command as run.py and
`python -m mia`, printing mia's version for --version, and running a whole debug=small job."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mia
from mia import cli

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, cwd=ROOT, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("command", [["-m", "mia"], ["run.py"]], ids=["python -m mia", "run.py"])
def test_version_is_mias_own(command):
    proc = _run(*command, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"mia {mia.__version__}\n"
    assert "Hydra" not in proc.stdout


def test_the_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"]["mia"] == "mia.cli:main"
    module, _, name = project["scripts"]["mia"].partition(":")
    assert module == cli.__name__ and callable(getattr(cli, name))


def test_run_py_is_the_same_command():
    """run.py only calls mia.cli.main: the two cannot drift apart."""
    code = (ROOT / "run.py").read_text(encoding="utf-8")
    assert "from mia.cli import main" in code
    assert not re.search(r"^\s*(import hydra|@hydra)", code, re.M)


def test_the_config_tree_is_found_from_any_folder(tmp_path):
    proc = _run("-m", "mia", "--cfg", "job", "experiment=gap_scaling", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "  epochs: 28\n" in proc.stdout  # the study's T: conf/ was found and composed


@pytest.mark.slow
def test_mia_debug_small_runs(tmp_path, small_corpus):
    """`mia debug=small` (here `python -m mia`, which calls the same function) runs a whole job."""
    proc = _run(
        "-m", "mia", "debug=small", f"paths.root_dir={tmp_path}", "logger=none", timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = (tmp_path / "outputs" / "runs").iterdir()
    results = json.loads((job / "results.json").read_text())
    assert results["target"]["size"] == 300 and "csa" in results["attacks"]
    assert f"results: {job / 'results.json'}" in proc.stdout
    assert (job / "run.log").is_file()  # the log keeps its name whichever entry point ran the job
