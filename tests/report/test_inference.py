"""The sweep report's dataset-inference section (mia/report/inference.py): each job's own result, or
one recomputed from its scores.parquet with its settings, a table, and the smallest m against N."""

import numpy as np
import pandas as pd

from mia.evaluation.dataset_inference import dataset_inference
from mia.report import build_report
from tests.helpers.sweeps import fake_job, write_sweep


def test_report_plots_smallest_m_against_n(tmp_path):
    # Three sizes whose signal weakens with N: m grows with N, and the largest N is past the grid.
    runs = []
    for i, (n, shift) in enumerate(((1000, 2.0), (4000, 0.6), (16000, 0.1))):
        rng = np.random.default_rng(i)
        scores = rng.normal(shift, 1, 500), rng.normal(0, 1, 500)  # members shifted by `shift` sd
        runs.append(
            fake_job(n, 40, cos=scores, attacks={"csa": scores}, dataset_inference={"draws": 500})
        )
    sweep = write_sweep(tmp_path, runs)
    build_report(sweep, wandb_log=False)
    rows = pd.read_csv(sweep / "dataset_inference.csv").sort_values("size")
    found = list(rows["smallest_m"])
    assert found[0] < found[1] and np.isnan(found[2])  # past the grid at the largest N
    assert rows["predicted_m"].iloc[2] > 250 and rows["calibrated"].all()
    assert (sweep / "m_vs_N.png").stat().st_size > 1000
    assert "> 250 (predicted" in (sweep / "report.md").read_text()


def test_the_report_takes_each_jobs_own_result_and_recomputes_only_what_is_missing(tmp_path):
    """A job that ran dataset inference is not run again: its results.json's result is the row
    (marked here by an m no grid holds); a job without one is recomputed from its scores.parquet."""
    rng = np.random.default_rng(0)
    scores = rng.normal(1.0, 1, 300), rng.normal(0, 1, 300)
    ran, missing = (
        fake_job(n, 40, cos=scores, attacks={"csa": scores}, dataset_inference={"draws": 200})
        for n in (1000, 4000)
    )
    own = dataset_inference(*scores, ran.record["config"]["analysis"]["dataset_inference"], seed=0)
    ran.record["analysis"] = {"dataset_inference": {"csa": {**own, "smallest_m": 7777}}}
    sweep = write_sweep(tmp_path, [ran, missing])
    build_report(sweep, wandb_log=False)
    rows = pd.read_csv(sweep / "dataset_inference.csv").set_index("size")
    assert rows.loc[1000, "smallest_m"] == 7777
    assert rows.loc[4000, "smallest_m"] == own["smallest_m"] and rows.loc[4000, "fpr"] == own["fpr"]
