"""Intervals on the low-FPR TPRs, the paired comparison of two attacks (bootstrap and DeLong), the
low-FPR resolution flag and thresholds calibrated on known non-members (docs/design.md §5)."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from mia.evaluation import metrics
from mia.evaluation.metrics import (
    calibrated_thresholds,
    delong,
    low_fpr_resolved,
    paired_comparison,
    roc_metrics,
    tpr_at_fpr,
)


def labelled(members, nonmembers):
    return np.r_[members, nonmembers], np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]


def gaussian(rng, n, shift=1.0):
    return rng.normal(shift, 1, n), rng.normal(0, 1, n)


def test_resampled_tprs_equal_tpr_at_fpr_on_every_resample_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n1, n0 = rng.integers(2, 40), rng.integers(2, 400)
        pos, neg = (
            np.round(rng.normal(0.5, 1, n1), 1),
            np.round(rng.normal(0, 1, n0), 1),
        )  # many ties
        pi, ni = rng.integers(0, n1, (3, n1)), rng.integers(0, n0, (3, n0))
        for target in (1e-3, 1e-2, 0.1, 0.5):
            got = metrics._resampled_tprs(pos, neg, target)(pi, ni)
            for r in range(3):
                fpr, tpr, _ = roc_curve(
                    *labelled(pos[pi[r]], neg[ni[r]])[::-1], drop_intermediate=False
                )
                assert got[r] == tpr_at_fpr(fpr, tpr, target)


def test_tpr_interval_holds_the_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (1000, 4000, 16000):
        r = roc_metrics(*labelled(*gaussian(rng, n, 2.0)), n_bootstrap=200, seed=0)
        for k in ("tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3"):
            lo, hi = r[f"{k}_ci95"]
            assert lo <= r[k] <= hi and lo < hi
        widths.append(np.diff(r["tpr_at_fpr_1e-2_ci95"])[0])
    # the interval narrows like 1 / sqrt(n): a quarter of the pairs, twice the width, within noise
    assert widths[0] > 1.5 * widths[1] > 1.5 * 1.5 * widths[2]


def test_tpr_intervals_come_from_the_auc_resamples():
    """Adding the TPR bootstrap leaves the AUC's interval as it was: the same draws, the same
    seed."""
    rng = np.random.default_rng(2)
    pos, neg = gaussian(rng, 300)
    r = roc_metrics(*labelled(pos, neg), n_bootstrap=50, seed=7)
    aucs = metrics._bootstrap(50, (300, 300), 7, metrics._resampled_aucs(pos, neg))
    assert r["auc_ci95"] == [float(x) for x in np.percentile(aucs, [2.5, 97.5])]


@pytest.mark.parametrize("fpr, n_resolved", [(1e-2, 1000), (1e-3, 10000)])
def test_low_fpr_resolved_flips_at_ten_false_positives(fpr, n_resolved):
    assert not low_fpr_resolved(n_resolved - 1, fpr) and low_fpr_resolved(n_resolved, fpr)
    key = {1e-2: "1e-2", 1e-3: "1e-3"}[fpr]
    rng = np.random.default_rng(3)
    for n0, expected in ((n_resolved - 1, False), (n_resolved, True)):
        r = roc_metrics(*labelled(rng.normal(1, 1, 50), rng.normal(0, 1, n0)), n_bootstrap=0)
        assert r["low_fpr_resolved"][key] is expected


def test_an_attack_against_itself_differs_by_exactly_zero():
    rng = np.random.default_rng(4)
    a = gaussian(rng, 500)
    d = paired_comparison(a, a, n_bootstrap=200, seed=0)
    assert d["delta_auc"] == 0.0 and d["delta_auc_ci95"] == [0.0, 0.0]
    assert d["delta_tpr_at_fpr_1e-2"] == 0.0 and d["delta_tpr_at_fpr_1e-2_ci95"] == [0.0, 0.0]
    assert d["p_value"] == 1.0 and d["delong_p_value"] == 1.0


def test_a_strictly_better_attack_is_told_apart_and_the_two_tests_agree():
    """B is A plus noise on the same pairs: A is better, and only the paired test can see it at this
    n."""
    rng = np.random.default_rng(5)
    signal = np.r_[np.full(500, 0.8), np.zeros(500)] + rng.normal(0, 1, 1000)
    a = (signal[:500], signal[500:])
    noisy = signal + rng.normal(0, 0.7, 1000)
    b = (noisy[:500], noisy[500:])
    d = paired_comparison(a, b, n_bootstrap=400, seed=0)
    lo, hi = d["delta_auc_ci95"]
    assert d["delta_auc"] > 0 and 0 < lo <= d["delta_auc"] <= hi
    assert d["p_value"] < 0.05 and d["delong_p_value"] < 0.05  # the interval excludes 0: p below 5%
    reverse = paired_comparison(b, a, n_bootstrap=400, seed=0)  # the sign follows the order
    assert reverse["delta_auc"] == -d["delta_auc"] and reverse["delta_auc_ci95"][1] < 0
    # the same two attacks scored on separate (unpaired) pairs: their AUC intervals overlap
    ra, rb = (roc_metrics(*labelled(*x), n_bootstrap=200) for x in (a, b))
    assert ra["auc_ci95"][0] < rb["auc_ci95"][1]


def test_equal_attacks_on_the_same_pairs_are_no_different():
    rng = np.random.default_rng(6)
    base = np.r_[np.full(300, 0.5), np.zeros(300)]
    a, b = base + rng.normal(0, 1, 600), base + rng.normal(0, 1, 600)
    d = paired_comparison((a[:300], a[300:]), (b[:300], b[300:]), n_bootstrap=400, seed=0)
    lo, hi = d["delta_auc_ci95"]
    assert lo < 0 < hi and d["p_value"] > 0.05 and d["delong_p_value"] > 0.05
    assert np.sign(d["delta_auc"]) == np.sign(
        delong((a[:300], a[300:]), (b[:300], b[300:]))["delta"]
    )


def brute_force_delong(a, b):
    """DeLong's variance from its definition: psi(x, y) = 1, 1/2, 0 for x >, =, < y; V10_i the mean
    of psi(member i, each non-member), V01_j the mean of psi(each member, non-member j)."""

    def psi(x, y):
        return 1.0 if x > y else 0.5 if x == y else 0.0

    comps = []
    for pos, neg in (a, b):
        v10 = np.array([np.mean([psi(x, y) for y in neg]) for x in pos])
        v01 = np.array([np.mean([psi(x, y) for x in pos]) for y in neg])
        comps.append((v10, v01))
    (a10, a01), (b10, b01) = comps
    n1, n0 = len(a[0]), len(a[1])
    s10 = np.cov(np.vstack([a10, b10]))  # 2 x 2, ddof 1
    s01 = np.cov(np.vstack([a01, b01]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / n1 + (
        s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]
    ) / n0
    return a10.mean() - b10.mean(), var


def test_delong_matches_its_definition_on_a_tiny_case_with_ties():
    a = (np.array([0.9, 0.7, 0.5, 0.4, 0.5]), np.array([0.8, 0.5, 0.2, 0.1, 0.5, 0.3]))
    b = (np.array([0.3, 0.6, 0.5, 0.9, 0.2]), np.array([0.4, 0.1, 0.5, 0.6, 0.2, 0.3]))
    delta, var = brute_force_delong(a, b)
    got = delong(a, b)
    assert got["delta"] == pytest.approx(delta, abs=1e-12) and got["var"] == pytest.approx(
        var, rel=1e-12
    )
    assert got["auc_a"] == pytest.approx(roc_auc_score(*labelled(*a)[::-1]))
    assert got["auc_b"] == pytest.approx(roc_auc_score(*labelled(*b)[::-1]))
    assert got["p_value"] == pytest.approx(2 * stats.norm.sf(abs(delta) / np.sqrt(var)))


def test_delong_agrees_with_the_paired_bootstrap_in_sign_and_size():
    rng = np.random.default_rng(7)
    for shift_b in (0.6, 0.9, 1.2):
        signal = rng.normal(0, 1, 800)
        a = (signal[:400] + 0.9, signal[400:])
        b_all = 0.5 * signal + rng.normal(0, 0.9, 800)
        b = (b_all[:400] + shift_b * 0.5, b_all[400:])
        d, dl = paired_comparison(a, b, n_bootstrap=400, seed=0), delong(a, b)
        assert np.sign(dl["delta"]) == np.sign(np.mean(d["delta_auc_ci95"]))
        # the bootstrap's interval and DeLong's normal interval agree on where the difference lies
        half = 1.96 * np.sqrt(dl["var"])
        assert d["delta_auc_ci95"][0] == pytest.approx(dl["delta"] - half, abs=0.02)
        assert d["delta_auc_ci95"][1] == pytest.approx(dl["delta"] + half, abs=0.02)


def test_paired_comparison_refuses_different_pairs():
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match="same pairs"):
        paired_comparison(gaussian(rng, 10), gaussian(rng, 11), n_bootstrap=5)


def test_a_threshold_set_on_known_nonmembers_gives_the_target_fpr():
    rng = np.random.default_rng(9)
    known, members, nonmembers = (
        rng.normal(0, 1, 200_000),
        rng.normal(2, 1, 200_000),
        rng.normal(0, 1, 200_000),
    )
    out = calibrated_thresholds(known, members, nonmembers)
    assert [e["fpr_target"] for e in out] == [1e-2, 1e-3]
    for e in out:
        f = e["fpr_target"]
        assert e["threshold"] == pytest.approx(stats.norm.isf(f), abs=0.05)
        lo, hi = e["realised_fpr_ci95"]  # Clopper-Pearson, given the threshold
        assert lo <= e["realised_fpr"] <= hi and e["realised_fpr"] == pytest.approx(f, rel=0.3)
        assert np.mean(known > e["threshold"]) <= f  # on D_no itself, at most the target
        assert e["tpr"] == pytest.approx(stats.norm.sf(stats.norm.isf(f) - 2), abs=0.01)
        assert e["tpr_ci95"][0] <= e["tpr"] <= e["tpr_ci95"][1]
        assert e["n_known"] == 200_000 and e["resolved"] is True
    # a threshold set on non-members unlike the evaluation's misses its target: D_no must match them
    shifted = calibrated_thresholds(known - 1, members, nonmembers)[0]
    assert shifted["realised_fpr_ci95"][0] > 0.02


def test_calibrated_allows_for_the_known_non_members_sampling_too():
    """1,000 D_no scores set a 1% threshold, 5,000 non-members realise it. Where the two are
    exchangeable, the threshold's own sampling spreads the realised FPR far beyond a Clopper-Pearson
    interval given the threshold: that interval misses 1% in about 40% of draws, the flag may miss
    it in no more than 5%. Non-members shifted up by half a standard deviation are flagged."""
    rng = np.random.default_rng(12)
    draws = [
        calibrated_thresholds(rng.normal(size=1000), rng.normal(size=50), rng.normal(size=5000))[0]
        for _ in range(300)
    ]
    missed_by_cp = np.mean(
        [not (lo <= 0.01 <= hi) for lo, hi in (e["realised_fpr_ci95"] for e in draws)]
    )
    flagged = np.mean([not e["calibrated"] for e in draws])
    assert missed_by_cp > 0.25 and flagged <= 0.05, (missed_by_cp, flagged)
    for e in draws:
        lo, hi = e["expected_fpr95"]
        assert lo < 0.01 < hi and e["calibrated"] == (lo <= e["realised_fpr"] <= hi)
    shifted = [
        calibrated_thresholds(rng.normal(size=1000), [0.0], rng.normal(0.5, 1, 5000))[0]
        for _ in range(20)
    ]
    assert not any(e["calibrated"] for e in shifted)


def test_calibration_resolution_follows_the_known_non_members():
    rng = np.random.default_rng(10)
    out = calibrated_thresholds(rng.normal(size=999), rng.normal(size=50), rng.normal(size=50))
    assert [e["resolved"] for e in out] == [False, False]
    out = calibrated_thresholds(rng.normal(size=1000), rng.normal(size=50), rng.normal(size=50))
    assert [e["resolved"] for e in out] == [True, False]


def test_a_threshold_on_a_block_of_tied_known_scores_is_flagged():
    """5% of D_no tied at its top score: both quantiles land on the block, and "strictly above"
    calls no member at all: `tied` says so, where untied scores leave it false."""
    rng = np.random.default_rng(11)
    known = np.r_[np.full(100, 9.0), rng.normal(size=1900)]
    members, nonmembers = np.full(50, 9.0), rng.normal(size=50)
    out = calibrated_thresholds(known, members, nonmembers)
    assert [(e["threshold"], e["tied"], e["tpr"]) for e in out] == [(9.0, True, 0.0)] * 2
    untied = calibrated_thresholds(rng.normal(size=2000), members, nonmembers)
    assert [e["tied"] for e in untied] == [False, False]


def test_bootstrap_p_value_is_one_without_a_difference_and_small_with_a_clear_one():
    assert metrics.bootstrap_p_value(np.zeros(99)) == 1.0
    assert metrics.bootstrap_p_value(np.full(99, 0.1)) == pytest.approx(2 / 100)
    assert metrics.bootstrap_p_value(np.full(99, -0.1)) == pytest.approx(2 / 100)
