"""The sweep report's dataset-inference section (mia/report/inference.py): recomputed from each job's
scores.parquet with its own settings, a table, and the smallest m against N."""
import numpy as np
import pandas as pd

from mia.report import build_report
from tests.helpers.sweeps import fake_job, write_sweep


def test_report_plots_smallest_m_against_n(tmp_path):
    # Three sizes whose signal weakens with N: m grows with N, and the largest N is past the grid.
    runs = []
    for i, (n, shift) in enumerate(((1000, 2.0), (4000, 0.6), (16000, 0.1))):
        rng = np.random.default_rng(i)
        scores = rng.normal(shift, 1, 500), rng.normal(0, 1, 500)  # members shifted by `shift` sd
        runs.append(fake_job(n, 40, cos=scores, attacks={"csa": scores}, dataset_inference={"draws": 500}))
    sweep = write_sweep(tmp_path, runs)
    build_report(sweep, wandb_log=False)
    rows = pd.read_csv(sweep / "dataset_inference.csv").sort_values("size")
    found = list(rows["smallest_m"])
    assert found[0] < found[1] and np.isnan(found[2])  # past the grid at the largest N
    assert rows["predicted_m"].iloc[2] > 250 and rows["calibrated"].all()
    assert (sweep / "m_vs_N.png").stat().st_size > 1000
    assert "> 250 (predicted" in (sweep / "report.md").read_text()
