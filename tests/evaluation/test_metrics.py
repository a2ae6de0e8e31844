"""Metrics pinned on small hand-worked fixtures (docs/design.md §5, §6)."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import expit
from sklearn.metrics import roc_auc_score, roc_curve

from mia.evaluation import metrics
from mia.evaluation.metrics import gap, gaussian_auc, roc_metrics, roc_table, tpr_at_fpr


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
    assert r["oracle_balanced_accuracy"] == 1.0
    assert r["auc_ci95"] == [1.0, 1.0]


def test_hand_worked_example():
    r = roc_metrics(*HAND, n_bootstrap=50)
    assert r["auc"] == pytest.approx(0.71875)
    assert r["oracle_balanced_accuracy"] == pytest.approx(0.75)
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
    assert set(r) == {
        "auc",
        "auc_std",
        "auc_ci95",
        "tpr_at_fpr_1e-2",
        "tpr_at_fpr_1e-2_ci95",
        "tpr_at_fpr_1e-3",
        "tpr_at_fpr_1e-3_ci95",
        "low_fpr_resolved",
        "tpr_tied",
        "top_tie_share",
        "oracle_balanced_accuracy",
        "n_members",
        "n_nonmembers",
    }
    lists = ("auc_ci95", "tpr_at_fpr_1e-2_ci95", "tpr_at_fpr_1e-3_ci95")
    # np.float64 subclasses float, so check the exact type, not just json.dumps.
    assert all(
        type(r[k]) is float
        for k in r
        if k not in lists + ("low_fpr_resolved", "tpr_tied", "n_members", "n_nonmembers")
    )
    assert all(type(v) is float for k in lists for v in r[k])
    assert r["low_fpr_resolved"] == {"1e-2": False, "1e-3": False}
    assert all(type(v) is bool for v in r["low_fpr_resolved"].values())
    assert r["tpr_tied"] == {"1e-2": False, "1e-3": False}
    assert all(type(v) is bool for v in r["tpr_tied"].values())
    assert type(r["n_members"]) is int
    json.dumps(r)
    json.dumps(gap([0.1, 0.2], [0.0, 0.1], n_bootstrap=5))


def test_tie_straddling_the_target_is_interpolated_and_flagged():
    """A block of tied top scores (the float32 losses that all round to 0) holding 300 members and
    20 of 1000 non-members: FPR 1% falls inside it. The step definition would read TPR 0 (no
    threshold gets under 2% FPR without dropping the whole block); the ROC's straight segment
    across the block, the average over random tie-breaks, gives 10 / 20 of its 300 members."""
    rng = np.random.default_rng(0)
    members = np.r_[np.full(300, 5.0), rng.normal(0, 1, 700)]
    nonmembers = np.r_[np.full(20, 5.0), rng.normal(-1, 1, 980)]
    r = roc_metrics(*labelled(members, nonmembers), n_bootstrap=50)
    assert r["tpr_at_fpr_1e-2"] == pytest.approx(300 * 10 / 20 / 1000)
    assert r["tpr_at_fpr_1e-3"] == pytest.approx(300 * 1 / 20 / 1000)
    assert r["tpr_tied"] == {"1e-2": True, "1e-3": True}
    assert r["top_tie_share"] == 320 / 2000
    lo, hi = r["tpr_at_fpr_1e-2_ci95"]  # the resamples interpolate too: no interval at 0
    assert 0 < lo <= r["tpr_at_fpr_1e-2"] <= hi
    # the AUC counts ties one half, as before
    assert r["auc"] == roc_auc_score(
        labelled(members, nonmembers)[1], labelled(members, nonmembers)[0]
    )
    # the same pairs without the tie: the step value, unflagged, 1 / n at the top
    untied = roc_metrics(
        *labelled(members + rng.normal(0, 1e-6, 1000), nonmembers - 1), n_bootstrap=0
    )
    assert untied["tpr_tied"] == {"1e-2": False, "1e-3": False}
    assert untied["top_tie_share"] == 1 / 2000


def test_hand_example_interpolates_inside_its_tie():
    """HAND's member and non-member tied at 0.5 span the ROC segment (.25, .5) - (.5, .75)."""
    fpr, tpr, _ = roc_curve(HAND[1], HAND[0], drop_intermediate=False)
    assert tpr_at_fpr(fpr, tpr, 0.375) == 0.625 and metrics.tpr_tied(fpr, tpr, 0.375)
    assert tpr_at_fpr(fpr, tpr, 0.3) == pytest.approx(0.55)
    # on its endpoints and across the lone non-member 0.8, no tie and the step value
    assert not metrics.tpr_tied(fpr, tpr, 0.25) and not metrics.tpr_tied(fpr, tpr, 0.1)
    assert tpr_at_fpr(fpr, tpr, 0.1) == 0.25


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
        roc_metrics(expit(scores), labels, n_bootstrap=0)["auc"]
    )


def test_resampled_aucs_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos, neg = np.round(rng.normal(0.3, 1, 300), 1), np.round(rng.normal(0, 1, 200), 1)
    pi, ni = rng.integers(0, 300, (5, 300)), rng.integers(0, 200, (5, 200))
    got = metrics._resampled_aucs(pos, neg)(pi, ni)
    want = [roc_auc_score(*labelled(pos[p], neg[n])[::-1]) for p, n in zip(pi, ni, strict=True)]
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
        best = max(
            (pos >= t).mean() for t in np.r_[np.inf, scores] if (neg >= t).mean() <= row["fpr"]
        )
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


def _unit(rng, n, d=8):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pair_losses_are_clip_s_infonce_over_the_pair_and_the_bank():
    rng = np.random.default_rng(0)
    img, txt, bank_img, bank_txt = (_unit(rng, n) for n in (5, 5, 7, 7))
    got = metrics.pair_losses(img, txt, bank_img, bank_txt, 20.0)
    for i in range(5):  # row i against its own pair (class 0) and the bank, both ways
        texts = torch.tensor(np.vstack([txt[i : i + 1], bank_txt]))
        images = torch.tensor(np.vstack([img[i : i + 1], bank_img]))
        i2t = torch.nn.functional.cross_entropy(
            20.0 * torch.tensor(img[i]) @ texts.T, torch.tensor(0)
        )
        t2i = torch.nn.functional.cross_entropy(
            20.0 * torch.tensor(txt[i]) @ images.T, torch.tensor(0)
        )
        assert got[i] == pytest.approx(float(i2t + t2i) / 2, rel=1e-12)
    assert got.dtype == np.float64


def test_the_loss_gap_is_negative_where_members_are_fitted_better():
    rng = np.random.default_rng(1)
    m_img = _unit(rng, 50)
    m_txt = m_img + 0.1 * rng.normal(size=m_img.shape)  # members: caption close to its image
    m_txt /= np.linalg.norm(m_txt, axis=1, keepdims=True)
    n_img, n_txt, b_img, b_txt = (_unit(rng, 50) for _ in range(4))
    out = metrics.loss_gap((m_img, m_txt), (n_img, n_txt), (b_img, b_txt), 10.0, n_bootstrap=50)
    assert out["value"] < 0 and out["ci95"][1] < 0
    assert out["value"] == pytest.approx(out["member_mean"] - out["nonmember_mean"])
    assert out["bank"] == 50 and out["logit_scale"] == 10.0


def test_d_prime_hand_value_and_interval():
    m, n = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0])  # var 1 and 0.5
    out = metrics.d_prime(m, n, n_bootstrap=0)
    assert out["value"] == pytest.approx(1.5 / np.sqrt(0.75)) and out["ci95"] is None
    rng = np.random.default_rng(2)
    out = metrics.d_prime(rng.normal(1, 1, 400), rng.normal(0, 1, 400), n_bootstrap=200)
    assert out["ci95"][0] < out["value"] < out["ci95"][1] and 0.7 < out["value"] < 1.3
