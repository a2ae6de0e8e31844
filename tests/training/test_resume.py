"""A training killed with SIGKILL resumes from its last checkpoint; the cache never serves it
half-trained."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mia.training import history
from tests.helpers.config import SMALL

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _job(root) -> list[str]:
    """A debug=small job of 40 epochs that checkpoints at every epoch end: long enough to stop."""
    return [
        sys.executable,
        "run.py",
        *SMALL,
        "train.epochs=40",
        "train.checkpoint_s=0",
        f"paths.root_dir={root}",
        "logger=none",
    ]


def _first_checkpoint(proc, root) -> Path | None:
    """The job's target checkpoint once it has bytes; None if the job ends, or 300 s pass, first."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list((root / ".cache" / "targets").glob("*/ckpt/last.ckpt"))
        if found and found[0].stat().st_size > 0:
            return found[0]
        time.sleep(0.2)
    return None


def test_sigkill_mid_training_then_resume(tmp_path, small_corpus):
    args = _job(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        ckpt = _first_checkpoint(proc, tmp_path)
        time.sleep(1.0)  # let it get a few epochs in, then kill it mid-run
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert ckpt is not None, "no checkpoint appeared before the job ended"
    tdir = ckpt.parent.parent
    assert not (tdir / "DONE").exists() and not (tdir / "model.pt").exists()

    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming target training from" in done.stdout + done.stderr  # Hydra logs to stdout
    res = json.loads(
        Path(done.stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text()
    )
    assert not res["target"]["cache_hit"] and res["target"]["epochs"] == 40
    assert (tdir / "DONE").exists() and not (tdir / "ckpt").exists()
    # The coverage check inside training passed: every member seen exactly 40 times across both
    # runs.
    assert len(Path(res["target"]["trained_uids"]).read_text().split()) == 300
    # The history holds both runs: one row per epoch (3 steps each), the replayed ones once.
    table = pd.read_csv(tdir / history.FILE)
    assert list(table["epoch"]) == list(range(40)) and list(table["step"]) == list(range(2, 120, 3))


def test_sigterm_mid_training_exits_143_in_one_line_then_resumes(tmp_path, small_corpus):
    """What a scheduler or `kill` sends: the job stops with 128 + 15, one line saying how to go on,
    and the same command resumes the training from its checkpoint."""
    args = _job(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    log = tmp_path / "stderr.txt"  # a file, not a pipe: a full pipe would stall the job
    with log.open("w") as err:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        ckpt = _first_checkpoint(proc, tmp_path)
        assert ckpt is not None and proc.poll() is None, "the job ended before a checkpoint"
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM;") and "python run.py debug=small" in last
    assert "Traceback" not in stderr
    tdir = ckpt.parent.parent
    assert ckpt.is_file() and not (tdir / "DONE").exists()

    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming target training from" in done.stdout + done.stderr  # Hydra logs to stdout
    res = json.loads(
        Path(done.stdout.strip().splitlines()[-1].removeprefix("results: ")).read_text()
    )
    assert not res["target"]["cache_hit"] and res["target"]["epochs"] == 40
    assert (tdir / "DONE").exists()
