"""The sweep report rebuilt from committed jobs: tests/report/sweep holds nine fake jobs
(results.json and scores.parquet, as tests/helpers/sweeps.py writes them: a 2 T x 2 N grid of two
seeds with csa, blind and wsa, and one OOD job) beside the report the code wrote from them."""

import json
import shutil
from pathlib import Path

from mia.report import build_report
from mia.report.build import rebuild_law

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


def test_the_law_is_refitted_from_a_written_reports_points(tmp_path):
    """rebuild_law reads points.csv and multirun.yaml alone: the steps come from the batch size,
    fits.json keeps its other fits and report.md its other sections, with the law's replaced."""
    sweep = tmp_path / SWEEP.name
    shutil.copytree(SWEEP, sweep, ignore=shutil.ignore_patterns("[0-9]"))
    (sweep / "multirun.yaml").write_text(
        "train:\n  batch_size: 500\nanalysis:\n  law:\n    min_steps: 25\n"
    )
    before = json.loads((sweep / "fits.json").read_text())
    rebuild_law(sweep)
    after = json.loads((sweep / "fits.json").read_text())
    assert {k: v for k, v in after.items() if k != "tn_law"} == {
        k: v for k, v in before.items() if k != "tn_law"
    }
    law = after["tn_law"]
    # T = 10 at N = 1000 and 4000 take 20 and 80 steps at batch 500: the first is under-trained
    (ex,) = [c for c in law["excluded"] if c["reason"].startswith("under-trained")]
    assert (ex["epochs"], ex["size"], ex["steps"]) == (10, 1000, 20)
    assert sorted(c["steps"] for c in law["cells"] + law["excluded"]) == [20, 80, 80, 320]
    assert law["settings"]["min_steps"] == 25
    md = (sweep / "report.md").read_text()
    assert md.count("## Epochs and size together") == 1 and "## Scaling fits" in md
    assert "under-trained: 20 optimiser steps" in md
    assert (sweep / "gap_vs_T_by_N.png").stat().st_size > 1000
