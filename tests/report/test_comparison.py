import csv

import numpy as np
import pytest

from mia.report import build_report
from mia.report.comparison import base_of, comparison_rows
from mia.report.rows import load_rows
from mia.report.stats import points, seed_mean_delta_aucs, seed_mean_metrics
from tests.helpers.sweeps import fake_job, scores_with_auc, write_sweep


def test_seed_mean_metrics_reads_the_same_replicates_as_the_delta_aucs():
    rng = np.random.default_rng(0)
    jobs = [
        (
            (rng.normal(1, 1, 80), rng.normal(0, 1, 80)),
            (rng.normal(0.5, 1, 80), rng.normal(0, 1, 80)),
        )
        for _ in range(3)
    ]
    both = seed_mean_metrics(jobs, 50, seed=4)
    assert both.shape == (50, 3) and np.array_equal(
        both[:, 0], seed_mean_delta_aucs(jobs, 50, seed=4)
    )
    alone = seed_mean_metrics([(a, None) for a, _ in jobs], 50, seed=4)
    assert 0.6 < alone[:, 0].mean() < 0.9 and ((alone[:, 1:] >= 0) & (alone[:, 1:] <= 1)).all()
    with pytest.raises(ValueError, match="same pairs"):
        seed_mean_metrics([((np.ones(3), np.zeros(3)), (np.ones(2), np.zeros(3)))], 5)


def test_base_of_names_a_variant_only_when_its_base_ran():
    assert base_of("gradnorm_pure", ["gradnorm", "gradnorm_pure"]) == "gradnorm"
    assert base_of("gradnorm_pure", ["gradnorm_pure"]) is None and base_of("csa", ["csa"]) is None


def test_comparison_gives_intervals_deltas_and_variants_against_their_base(tmp_path):
    """Three seeds; gradnorm at AUC 0.95 beats CSA (0.75), its leaky variant at 0.5 is below its
    base."""
    cos = scores_with_auc(0.75, 200)
    attacks = {
        "csa": cos,
        "gradnorm": scores_with_auc(0.95, 200),
        "gradnorm_pure": scores_with_auc(0.5, 200),
    }
    sweep = write_sweep(
        tmp_path, [fake_job(1000, 40, cos=cos, attacks=attacks, seed=s) for s in range(3)]
    )
    build_report(sweep, wandb_log=False)
    rows = {r["attack"]: r for r in csv.DictReader(open(sweep / "comparison.csv"))}
    assert set(rows) == {"csa", "gradnorm", "gradnorm_pure"}
    compared = {
        r["attack"]: r for r in comparison_rows(points(load_rows(sweep), 100), list(attacks), 100)
    }
    g, pure, c = compared["gradnorm"], compared["gradnorm_pure"], compared["csa"]
    assert (
        g["auc"] == pytest.approx(0.95, abs=0.01) and g["auc_ci95"][0] < g["auc"] < g["auc_ci95"][1]
    )
    assert (
        g["vs_csa_delta_auc"] == pytest.approx(0.2, abs=0.01) and g["vs_csa_delta_auc_ci95"][0] > 0
    )
    assert pure["vs_base_attack"] == "gradnorm" and pure["vs_base_delta_auc_ci95"][1] < 0
    assert "vs_csa_delta_auc" not in c and "vs_base_delta_auc" not in g
    assert not g["tpr_at_fpr_1e-2_resolved"]  # 200 non-members: 2 false positives at 1%
    report = (sweep / "report.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("| gradnorm_pure |"))
    assert (
        "below CSA" in line
        and "vs gradnorm, below gradnorm: -0.45" in line
        and "unresolved" in line
    )
