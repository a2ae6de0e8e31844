"""A Hydra multirun through a real SLURM scheduler: slurm-wlm and munge from Debian, one node on
localhost, jobs submitted by hydra-submitit-launcher exactly as on a cluster.

Only when asked for (MIA_TEST_SLURM=1, or `make test-slurm`): it runs as root, may install Debian
packages and starts daemons. The cluster is stopped by pid (tests/slurm/cluster.sh), also when the
run is interrupted by Ctrl-C, SIGTERM or SIGHUP."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.config import SMALL

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(
        f"signal {signum}"
    )  # as Ctrl-C: pytest still runs the fixtures' teardown


@pytest.fixture(scope="module")
def slurm_conf():
    if os.geteuid() != 0 or not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip(
            "the test cluster needs root and Debian's apt-get (it installs slurm-wlm and munge)"
        )
    # not pytest's tmp_path: munged runs as the munge user and must reach its socket folder
    state = Path(tempfile.mkdtemp(prefix="mia-slurm-"))
    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, _interrupt) for s in stops}
    try:
        started = subprocess.run(
            [str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=900
        )
        assert started.returncode == 0, started.stderr[-3000:]
        yield started.stdout.strip().splitlines()[-1]
    finally:
        for s in stops:  # a second signal must not cut the teardown short
            signal.signal(s, signal.SIG_IGN)
        try:
            subprocess.run([str(CLUSTER), "stop", str(state)], capture_output=True, timeout=120)
            shutil.rmtree(state, ignore_errors=True)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def test_multirun_on_slurm(slurm_conf, tmp_path):
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    sizes = [o for o in SMALL if not o.startswith(("data.size", "data.corpus.size"))]
    args = [
        sys.executable,
        "run.py",
        "-m",
        "hydra/launcher=slurm_local",
        *sizes,
        "data.corpus.size=3000",
        "data.size=1k,2k",
        "attack=csa",
        "logger=none",
        f"paths.root_dir={tmp_path}",
    ]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert sorted(r["target"]["size"] for r in results) == [1000, 2000]
    for r in results:
        assert 0 <= r["attacks"]["csa"]["auc"] <= 1 and r["target"]["epochs"] == 2
    # each job ran as its own SLURM job: submitit kept its logs per job id
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2
    assert (sweep / "report.md").exists()  # the report callback ran once the jobs were back


def test_requeued_job_resumes_from_its_checkpoint(slurm_conf, tmp_path):
    """`scontrol requeue` kills a running job and starts it again under the same id: submitit reruns
    it, and training picks up its last epoch-end checkpoint instead of starting over."""
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    sizes = [o for o in SMALL if not o.startswith(("data.size", "train.epochs"))]
    args = [
        sys.executable,
        "run.py",
        "-m",
        "hydra/launcher=slurm_local",
        *sizes,
        "data.size=300",
        "train.epochs=60",
        "train.checkpoint_s=0",
        "logger=none",
        f"paths.root_dir={tmp_path}",
    ]
    sweep = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not list(
            (tmp_path / ".cache" / "targets").glob("*/ckpt/last.ckpt")
        ):
            assert sweep.poll() is None, sweep.stdout.read()[-3000:]
            time.sleep(0.5)
        (job,) = (
            p.name
            for p in (tmp_path / "outputs" / "multiruns").glob("*/.submitit/*")
            if p.name.isdigit()
        )
        subprocess.run(["scontrol", "requeue", job], env=env, check=True)
        # SLURM holds a requeued job back for two minutes (BeginTime); once it is pending, release
        # it.
        for _ in range(120):
            state = subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True
            )
            if state.stdout.strip() == "PENDING":
                subprocess.run(
                    ["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True
                )
                break
            time.sleep(0.5)
        out, _ = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out[-3000:]
    (res,) = (
        json.loads(p.read_text())
        for p in (tmp_path / "outputs" / "multiruns").glob("*/0/results.json")
    )
    assert res["target"]["epochs"] == 60 and not res["target"]["cache_hit"]
    logs = "".join(
        p.read_text() for p in (tmp_path / "outputs" / "multiruns").glob(f"*/.submitit/{job}/*.out")
    )
    assert "resuming target training from" in logs
