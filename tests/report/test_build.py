"""The sweep report rebuilt from committed jobs: tests/report/sweep holds nine fake jobs
(results.json and scores.parquet, as tests/helpers/sweeps.py writes them: a 2 T x 2 N grid of two
seeds with csa, blind and wsa, and one OOD job) beside the report the code wrote from them."""

import shutil
from pathlib import Path

from mia.report import build_report

SWEEP = Path(__file__).parent / "sweep"


def test_a_report_rebuilt_from_committed_jobs_is_byte_identical(tmp_path):
    sweep = tmp_path / SWEEP.name  # the report's title names the folder
    for job in SWEEP.iterdir():
        if job.is_dir():
            shutil.copytree(job, sweep / job.name)
    build_report(sweep, wandb_log=False)
    written = {p.name for p in SWEEP.iterdir() if p.is_file()}
    rebuilt = {p.name for p in sweep.iterdir() if p.is_file() and p.suffix != ".png"}
    assert rebuilt == written
    for name in sorted(written):
        assert (sweep / name).read_bytes() == (SWEEP / name).read_bytes(), (
            f"{name} differs from tests/report/sweep/{name}; where the change is meant, rebuild "
            "the report from the jobs there and commit it"
        )
