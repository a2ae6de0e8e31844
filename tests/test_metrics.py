"""Metrics pinned on small hand-worked fixtures (docs/design.md §5, §6)."""

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score, roc_curve

from mia import plots
from mia.evaluation import metrics
from mia.evaluation.metrics import fit_loglog, gap, gaussian_auc, roc_metrics, roc_table, tpr_at_fpr


def labelled(members, nonmembers):
    scores = np.r_[members, nonmembers].astype(float)
    return scores, np.r_[np.ones(len(members)), np.zeros(len(nonmembers))].astype(int)


# Members 0.9 0.7 0.5 0.4, non-members 0.8 0.5 0.2 0.1. Pairs (member beats non-member):
#   0.9 > all four            -> 4
#   0.7 > 0.5 0.2 0.1         -> 3
#   0.5 > 0.2 0.1, ties 0.5   -> 2 + 1/2
#   0.4 > 0.2 0.1             -> 2
# AUC = 11.5 / 16 = 0.71875.
# ROC points (fpr, tpr) by descending threshold: (0,0) (0,.25) (.25,.25) (.25,.5) (.5,.75) (.5,1)
# (.75,1) (1,1). TPR at FPR <= .25 is 0.5; at FPR 0 it is 0.25. Balanced accuracy
# max (1 + tpr - fpr) / 2 = (1 + 1 - .5) / 2 = 0.75 at threshold 0.4.
HAND = labelled([0.9, 0.7, 0.5, 0.4], [0.8, 0.5, 0.2, 0.1])


def test_perfect_separation():
    scores, labels = labelled(np.linspace(1, 2, 2000), np.linspace(-2, -1, 2000))
    r = roc_metrics(scores, labels, n_bootstrap=20)
    assert r["auc"] == 1.0
    assert r["tpr_at_fpr_1e-3"] == 1.0 and r["tpr_at_fpr_1e-2"] == 1.0
    assert r["balanced_accuracy"] == 1.0
    assert r["auc_ci95"] == [1.0, 1.0]


def test_hand_worked_example():
    r = roc_metrics(*HAND, n_bootstrap=50)
    assert r["auc"] == pytest.approx(0.71875)
    assert r["balanced_accuracy"] == pytest.approx(0.75)
    assert r["tpr_at_fpr_1e-2"] == 0.25  # only the fpr = 0 points qualify with 4 non-members
    assert (r["n_members"], r["n_nonmembers"]) == (4, 4)
    fpr, tpr, _ = roc_curve(HAND[1], HAND[0], drop_intermediate=False)
    assert tpr_at_fpr(fpr, tpr, 0.25) == 0.5
    assert tpr_at_fpr(fpr, tpr, 0.2499) == 0.25
    assert tpr_at_fpr(fpr, tpr, 0.5) == 1.0


def test_low_fpr_uses_full_roc():
    # 4000 per class. Two members and two non-members tie at each of 1.0, 0.99, 0.98, giving
    # collinear ROC points (2,2) (4,4) (6,6) / 4000. drop_intermediate=True would drop the
    # middle one, which is the only point at FPR 1e-3: TPR@1e-3 would read 2/4000, not 4/4000.
    top = np.repeat([1.0, 0.99, 0.98], 2)
    scores, labels = labelled(np.r_[top, np.full(3994, 0.5)], np.r_[top, np.zeros(3994)])
    r = roc_metrics(scores, labels, n_bootstrap=0)
    assert r["tpr_at_fpr_1e-3"] == 4 / 4000
    assert r["tpr_at_fpr_1e-2"] == 1.0  # at 6 false positives every member is flagged


def test_result_is_plain_json():
    r = roc_metrics(*HAND, n_bootstrap=10)
    assert set(r) == {"auc", "auc_std", "auc_ci95", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3",
                      "balanced_accuracy", "n_members", "n_nonmembers"}
    # np.float64 subclasses float, so check the exact type, not just json.dumps.
    assert all(type(r[k]) is float for k in r if k not in ("auc_ci95", "n_members", "n_nonmembers"))
    assert all(type(v) is float for v in r["auc_ci95"])
    assert type(r["n_members"]) is int
    json.dumps(r)
    json.dumps(gap([0.1, 0.2], [0.0, 0.1], n_bootstrap=5))


def test_low_fpr_zero_when_top_nonmember_outranks_all_members():
    # 50 non-members: one false positive is already FPR 2% > 1%, so no member can be flagged.
    members = np.linspace(0.5, 0.9, 100)
    nonmembers = np.r_[10.0, np.linspace(0.0, 0.4, 49)]
    r = roc_metrics(*labelled(members, nonmembers), n_bootstrap=10)
    assert r["auc"] == pytest.approx(49 / 50)  # high AUC yet useless at low FPR
    assert r["tpr_at_fpr_1e-2"] == 0.0 and r["tpr_at_fpr_1e-3"] == 0.0


def test_raw_scores_not_squashed():
    scores, labels = labelled([50.0, 45.0, 44.0, -10.0], [40.0, 38.0, -50.0, -20.0])
    # pairs: 50>4, 45>4, 44>4, -10>2 -> 14/16. expit rounds to 1.0 above ~37, so a sigmoid
    # (as torchmetrics applies) ties the top five: their 6 member wins count 1/2 -> 11/16.
    assert roc_metrics(scores, labels, n_bootstrap=10)["auc"] == pytest.approx(14 / 16)
    assert roc_auc_score(labels, expit(scores)) == pytest.approx(11 / 16)  # the bug, for contrast
    # Where the sigmoid does not saturate it is monotone, so the AUC must not change.
    rng = np.random.default_rng(1)
    scores, labels = labelled(rng.normal(1, 3, 200), rng.normal(0, 3, 200))
    assert roc_metrics(scores, labels, n_bootstrap=0)["auc"] == pytest.approx(
        roc_metrics(expit(scores), labels, n_bootstrap=0)["auc"])


def test_resampled_aucs_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = np.round(rng.normal(0.3, 1, 300), 1), np.round(rng.normal(0, 1, 200), 1)
    pi, ni = rng.integers(0, 300, (5, 300)), rng.integers(0, 200, (5, 200))
    got = metrics._resampled_aucs(pos, neg)(pi, ni)
    want = [roc_auc_score(*labelled(pos[p], neg[n])[::-1]) for p, n in zip(pi, ni)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_bootstrap_ci_and_reproducibility():
    rng = np.random.default_rng(0)
    scores, labels = labelled(rng.normal(0.5, 1, 2000), rng.normal(0, 1, 2000))
    r = roc_metrics(scores, labels, n_bootstrap=200, seed=3)
    lo, hi = r["auc_ci95"]
    assert lo < r["auc"] < hi and r["auc_std"] > 0
    assert roc_metrics(scores, labels, n_bootstrap=200, seed=3) == r
    assert roc_metrics(scores, labels, n_bootstrap=200, seed=4)["auc_std"] != r["auc_std"]
    # Stratified resampling of both classes should match Hanley & McNeil's standard error.
    a, n = r["auc"], 2000
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n - 1) * (q1 - a * a) + (n - 1) * (q2 - a * a)) / n**2)
    assert r["auc_std"] == pytest.approx(se, rel=0.25)


def test_gap_hand_values():
    g = gap([0.5, 0.7], [0.1, 0.2, 0.3], n_bootstrap=200, seed=0)
    assert g["value"] == pytest.approx(0.4)
    assert g["member_mean"] == pytest.approx(0.6) and g["nonmember_mean"] == pytest.approx(0.2)
    assert g["member_std"] == pytest.approx(math.sqrt(0.02))  # ddof=1: (0.01 + 0.01) / 1
    assert g["nonmember_std"] == pytest.approx(0.1)
    # Resampled means lie in [0.5, 0.7] and [0.1, 0.3]: every diff is in [0.2, 0.6].
    assert 0.2 - 1e-12 <= g["ci95"][0] < 0.4 < g["ci95"][1] <= 0.6 + 1e-12
    assert g["std"] > 0
    assert gap([0.5, 0.7], [0.1, 0.2, 0.3], n_bootstrap=200, seed=0) == g


def test_gaussian_auc():
    assert gaussian_auc(0.0, 0.1, 0.3) == 0.5
    # sigma = mean(0.1, 0.2) = 0.15; gap = sqrt(2) * sigma gives Phi(1).
    assert gaussian_auc(math.sqrt(2) * 0.15, 0.1, 0.2) == pytest.approx(0.8413447460685429)
    values = [gaussian_auc(d, 0.1, 0.1) for d in (-0.2, -0.05, 0.0, 0.01, 0.05, 0.2)]
    assert values == sorted(values) and len(set(values)) == len(values)


def test_fit_loglog_exact_and_exclusion():
    x = [1e1, 1e2, 1e3, 1e4, 1e5]
    y = [10.0, 1.0, 0.1, 0.01, -0.003]  # y = 100 / x, last gap flipped sign
    f = fit_loglog(x, y)
    assert f["slope"] == pytest.approx(-1) and f["intercept"] == pytest.approx(2)
    assert f["slope_ci95"] == pytest.approx([-1, -1], abs=1e-9)
    assert f["n_points"] == 4
    assert f["excluded"] == [{"x": 1e5, "y": -0.003, "reason": "non-positive gap"}]


def test_fit_loglog_interval_by_hand():
    # log x = 0 1 2, log y = 0 1.1 2: slope 1, intercept 1/30, residuals -1/30 2/30 -1/30,
    # SSE = 6/900, s^2 = SSE / 1, se = sqrt(s^2 / 2) = 0.0577350, t(0.975, 1) = 12.7062047.
    f = fit_loglog([1, 10, 100], [1, 10**1.1, 100])
    assert f["slope"] == pytest.approx(1) and f["intercept"] == pytest.approx(1 / 30)
    half = 12.706204736174698 * math.sqrt(6 / 900 / 2)
    assert f["slope_ci95"] == pytest.approx([1 - half, 1 + half])


def test_fit_loglog_two_points_and_too_few():
    f = fit_loglog([10, 100], [1.0, 0.1])
    assert f["slope"] == pytest.approx(-1) and f["slope_ci95"] == [None, None]
    json.dumps(f)
    with pytest.raises(ValueError, match="2 points"):
        fit_loglog([10, 100, 1000], [1.0, 0.0, -0.1])


def test_roc_table_matches_bruteforce_step():
    rng = np.random.default_rng(2)
    scores, labels = labelled(rng.normal(1, 1, 300), rng.normal(0, 1, 500))
    table = roc_table(scores, labels, n_points=30)
    grid = np.array([row["fpr"] for row in table])
    assert len(table) == 30 and grid[0] == 1 / 500 and grid[-1] == 1.0
    np.testing.assert_allclose(np.diff(np.log(grid)), np.log(500) / 29)
    pos, neg = scores[labels == 1], scores[labels == 0]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    for row in table:
        assert row["tpr"] == tpr_at_fpr(fpr, tpr, row["fpr"])
        # Independent check: flag scores >= t for every t, best TPR within the FPR budget.
        best = max((pos >= t).mean() for t in np.r_[np.inf, scores] if (neg >= t).mean() <= row["fpr"])
        assert row["tpr"] == best
    assert roc_table(*labelled(pos, np.repeat(neg, 30)))[0]["fpr"] == 1e-4  # 1/15000 < 1e-4


@pytest.mark.parametrize("members,nonmembers", [([], [0.1, 0.2]), ([0.1, 0.2], [])])
def test_empty_class_raises(members, nonmembers):
    with pytest.raises(ValueError, match="both classes"):
        roc_metrics(*labelled(members, nonmembers))


def test_non_finite_scores_raise():
    scores, labels = labelled([0.1, np.nan, np.nan], [np.inf, 0.2])
    with pytest.raises(ValueError, match="2 NaN and 1 inf"):
        roc_metrics(scores, labels)
    with pytest.raises(ValueError, match="1 NaN"):
        gap([0.1, np.nan], [0.1, 0.2])


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(0)
    h = plots.score_histogram(rng.normal(1, 1, 100), rng.normal(0, 1, 80), tmp_path / "h.png", "hist")
    fpr, tpr, _ = roc_curve(*labelled(rng.normal(1, 1, 100), rng.normal(0, 1, 80))[::-1])
    r = plots.roc_loglog({"csa": (fpr, tpr), "chance-ish": (fpr, fpr)}, tmp_path / "sub" / "r.png", "roc")
    for p in (h, r):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    assert plt.get_fignums() == []  # figures closed


def _scaling_sweep(rng, sizes, n_seeds, slope=-1.0, seed_sd=0.1, pair_sd=0.01, k=400, bend=0.0):
    """Per-seed (member, non-member) cosines whose seed-mean gap is 0.2 (N / 1000)^slope, bent by
    `bend` (the quadratic term in log-log), with a log-normal training-seed effect (sd `seed_sd` in
    log10) and Gaussian pair noise."""
    out = []
    for n in sizes:
        jobs = []
        for _ in range(n_seeds):
            lx = np.log10(n / 1000)
            gap = 0.2 * 10 ** (slope * lx + bend * lx ** 2) * 10 ** rng.normal(0, seed_sd)
            nonmember = rng.normal(0.3, pair_sd, k)
            jobs.append((rng.normal(0.3, pair_sd, k) + gap, nonmember))
        out.append(jobs)
    return out


def test_bootstrap_slope_recovers_known_slope_and_spread():
    from mia.evaluation.metrics import bootstrap_loglog_slope, seed_mean_gap_table

    sizes = [1000, 2000, 4000, 8000, 16000]
    rng = np.random.default_rng(0)

    def ols(conditions):
        means = [np.mean([m.mean() - n.mean() for m, n in jobs]) for jobs in conditions]
        return np.polyfit(np.log10(sizes), np.log10(means), 1)[0], means

    # The spread of the slope over fresh experiments, which the bootstrap of one experiment must match.
    true_sd = np.std([ols(_scaling_sweep(rng, sizes, 6))[0] for _ in range(300)], ddof=1)
    conditions = _scaling_sweep(rng, sizes, 6)
    slope, means = ols(conditions)
    fit = bootstrap_loglog_slope(sizes, seed_mean_gap_table(conditions, 400, seed=1), means)
    assert fit["slope"] == pytest.approx(slope)
    assert abs(fit["slope"] + 1) < 3 * true_sd
    assert fit["slope_ci95"][0] < -1 < fit["slope_ci95"][1]
    assert 0.6 < fit["slope_std"] / true_sd < 1.5, (fit["slope_std"], true_sd)
    assert fit["n_invalid"] == 0 and fit["n_points"] == 5

    # Without a seed effect the interval is narrower: the bootstrap sees the training seeds' spread.
    quiet = bootstrap_loglog_slope(sizes, seed_mean_gap_table(_scaling_sweep(rng, sizes, 6, seed_sd=0.0), 400),
                                   means)
    assert quiet["slope_std"] < 0.6 * fit["slope_std"]


def test_seed_mean_gaps_resample_seeds_and_pairs():
    from mia.evaluation.metrics import seed_mean_gaps

    members, nonmembers = np.full(50, 0.5), np.full(50, 0.2)
    # Two seeds with constant cosines: only the draw of seeds moves the mean, to 0.3, 0.35 or 0.4.
    reps = seed_mean_gaps([(members, nonmembers), (members + 0.1, nonmembers)], 300, seed=0)
    assert set(np.round(reps, 6)) == {0.3, 0.35, 0.4}
    # One seed: only the pairs move it, around the observed gap.
    noisy = np.random.default_rng(0).normal(0.5, 0.1, 50)
    reps = seed_mean_gaps([(noisy, nonmembers)], 300, seed=0)
    assert reps.std() == pytest.approx(0.1 / np.sqrt(50), rel=0.3)


def test_bootstrap_slope_refuses_unresolved_points():
    from mia.evaluation.metrics import bootstrap_loglog_slope

    reps = np.tile([0.1, 0.01], (100, 1))
    reps[:10, 1] = -0.001  # 10% of the replicates lose the gap at the large end
    with pytest.raises(ValueError, match="non-positive gap"):
        bootstrap_loglog_slope([1000, 10000], reps, [0.1, 0.01])
    with pytest.raises(ValueError, match="non-positive mean gap"):
        bootstrap_loglog_slope([1000, 10000], reps, [0.1, -0.01])


def test_bootstrap_slope_flags_a_bend():
    from mia.evaluation.metrics import bootstrap_loglog_slope, seed_mean_gap_table

    sizes = [1000, 2000, 4000, 8000, 16000]
    rng = np.random.default_rng(3)
    straight = _scaling_sweep(rng, sizes, 4, seed_sd=0.02)
    means = [np.mean([m.mean() - n.mean() for m, n in jobs]) for jobs in straight]
    fit = bootstrap_loglog_slope(sizes, seed_mean_gap_table(straight, 300), means)
    assert fit["curvature_ci95"][0] < 0 < fit["curvature_ci95"][1]
    # Bend it: local slopes from about -0.2 to -1.8, like a target that saturates at small N.
    bent = _scaling_sweep(rng, sizes, 4, slope=-0.2, bend=-0.7, seed_sd=0.02)
    means = [np.mean([m.mean() - n.mean() for m, n in jobs]) for jobs in bent]
    fit = bootstrap_loglog_slope(sizes, seed_mean_gap_table(bent, 300), means)
    assert fit["curvature"] == pytest.approx(-0.7, abs=0.15) and fit["curvature_ci95"][1] < 0
