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


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    """Folders and files the refusal cases point at: a shard folder (one empty .tar: the job spec
    only lists it), an empty folder, a checkpoint file, and paths that do not exist."""
    root = tmp_path_factory.mktemp("paths")
    (root / "shards").mkdir()
    (root / "shards" / "00000.tar").write_bytes(b"")
    (root / "empty").mkdir()
    (root / "model.pt").write_bytes(b"")
    return {
        "shards": root / "shards",
        "empty": root / "empty",
        "ckpt": root / "model.pt",
        "missing": root / "missing",
    }


AUDIT = ["data=audit", "data.members={shards}", "data.nonmembers_path={shards}"]
CHECKPOINT = ["target=checkpoint", "target.path={ckpt}"]

# (overrides, what the one line says): each refused before any corpus is generated or indexed.
REFUSED = {
    "missing checkpoint": (
        ["target=checkpoint", "target.path={missing}"],
        "error: target.path='{missing}': no such file",
    ),
    "folder without a checkpoint": (
        ["target=checkpoint", "target.path={empty}"],
        "error: target.path='{empty}': is a folder without open_clip_config.json",
    ),
    "logger mode": (["logger=wandb", "logger.mode=bogus"], "error: logger.mode='bogus'"),
    "ddp divisibility": (
        ["trainer=ddp_cpu", "data.size=301"],
        "the largest that fits is data.size=300",
    ),
    "eval size the held-out part cannot hold": (
        ["data.split.known_size=750"],
        "the largest that fits is data.split.eval_size=50",
    ),
    "missing shard folder": (
        ["data=webdataset", "data.path={missing}"],
        "error: data.path='{missing}': no such folder",
    ),
    "folder without shards": (
        ["data=webdataset", "data.path={empty}"],
        "error: data.path='{empty}': holds no .tar shards",
    ),
    "missing audit members": (
        ["data=audit", "data.members={missing}", "data.nonmembers_path={shards}", *CHECKPOINT],
        "error: data.members='{missing}': no such folder",
    ),
    "missing uid list": (
        [*AUDIT, "data.nonmembers_uids={missing}", *CHECKPOINT],
        "error: data.nonmembers_uids='{missing}': no such file",
    ),
    "audit without a checkpoint": (
        [*AUDIT, "data.size=null"],
        "set target=checkpoint target.path=",
    ),
    "unknown option": (
        ["attack=cas"],
        "error: In 'config': Could not find 'attack/cas'; Available options in 'attack': aea, all,",
    ),
    "unknown key": (["train.lrr=0.1"], "error: Could not override 'train.lrr'"),
}


@pytest.mark.parametrize("overrides, says", REFUSED.values(), ids=list(REFUSED))
def test_a_bad_setting_is_one_line_exit_2_and_leaves_nothing(tmp_path, paths, overrides, says):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    args = [o.format(**paths) for o in overrides]
    proc = subprocess.run(
        [
            sys.executable,
            "run.py",
            "debug=small",
            "logger=none",
            f"paths.root_dir={tmp_path}",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says.format(**paths) in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "data.size=10k" not in lines[0]  # never points an audit towards training
    assert not (tmp_path / "outputs" / "runs").exists() or not any(
        (tmp_path / "outputs" / "runs").iterdir()
    )
    assert not (tmp_path / ".cache").exists()  # nothing generated or indexed


def test_a_refused_sweep_leaves_no_folder(tmp_path):
    proc = _run("run.py", "-m", "attack=cas,csa", "logger=none", f"paths.root_dir={tmp_path}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    sweeps = tmp_path / "outputs" / "multiruns"
    assert not sweeps.exists() or not any(sweeps.iterdir())


def test_hydra_full_error_keeps_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "run.py", "attack=cas", f"paths.root_dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr
