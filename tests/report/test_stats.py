"""The two-level bootstraps of a condition's seed-mean gap and seed-mean AUC difference
(mia/report/stats.py)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mia.report.stats import (
    holm,
    seed_interval,
    seed_mean_delta_aucs,
    seed_mean_gaps,
    steps,
    t_interval,
)


def test_seed_mean_gaps_resample_seeds_and_pairs():
    members, nonmembers = np.full(50, 0.5), np.full(50, 0.2)
    # Two seeds with constant cosines: only the draw of seeds moves the mean, to 0.3, 0.35 or 0.4.
    reps = seed_mean_gaps([(members, nonmembers), (members + 0.1, nonmembers)], 300, seed=0)
    assert set(np.round(reps, 6)) == {0.3, 0.35, 0.4}
    # One seed: only the pairs move it, around the observed gap.
    noisy = np.random.default_rng(0).normal(0.5, 0.1, 50)
    reps = seed_mean_gaps([(noisy, nonmembers)], 300, seed=0)
    assert reps.std() == pytest.approx(0.1 / np.sqrt(50), rel=0.3)


def test_seed_mean_delta_aucs_are_paired_and_pool_seeds():
    rng = np.random.default_rng(0)
    a = (rng.normal(1, 1, 200), rng.normal(0, 1, 200))
    assert not seed_mean_delta_aucs([(a, a)] * 3, 100).any()  # the same scores: 0 on every resample
    b = (a[0] + rng.normal(0, 1, 200), a[1] + rng.normal(0, 1, 200))
    jobs = [
        (a, b),
        (b, a),
    ]  # one seed +delta, the other -delta: the seed mean is 0, its spread the seeds'
    reps = seed_mean_delta_aucs(jobs, 400)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert lo < 0 < hi and hi - lo > roc_auc_score(*both(a)) - roc_auc_score(*both(b))


def both(pair):
    return np.r_[np.ones(len(pair[0])), np.zeros(len(pair[1]))], np.r_[pair[0], pair[1]]


def test_repeating_one_job_as_seeds_adds_no_confidence():
    """The seeds of a sweep score the same pairs: S copies of one job give one job's interval."""
    rng = np.random.default_rng(1)
    a = (rng.normal(0.3, 1, 300), rng.normal(0, 1, 300))
    b = (a[0] + rng.normal(0, 1, 300), a[1] + rng.normal(0, 1, 300))
    one = seed_mean_delta_aucs([(a, b)], 400, seed=3)
    four = seed_mean_delta_aucs([(a, b)] * 4, 400, seed=3)
    assert four.std() == pytest.approx(one.std(), rel=0.15)


def test_seed_interval_is_the_t_interval_over_seeds():
    """Differences 1, 2, 3: mean 2, standard error 1/sqrt(3); with 2 degrees of freedom the 97.5%
    quantile of t is 0.95 / sqrt(2 * 0.975 * 0.025) = 4.302653 and the two-sided p of t = sqrt(12)
    is 1 - sqrt(12 / 14)."""
    found = seed_interval([1.0, 2.0, 3.0])
    half = 0.95 / np.sqrt(2 * 0.975 * 0.025) / np.sqrt(3)
    assert found["mean"] == pytest.approx(2.0) and found["n"] == 3
    assert found["ci"] == pytest.approx([2 - half, 2 + half])
    assert found["ci"] == pytest.approx([-0.484138, 4.484138], abs=1e-6)
    assert found["p"] == pytest.approx(1 - np.sqrt(12 / 14))
    assert seed_interval([0.3]) is None  # one seed: no interval over seeds
    assert seed_interval([0.0, 0.0])["p"] == 1.0 and seed_interval([0.1, 0.1])["p"] == 0.0


def test_holm_adjusts_by_rank_and_stays_monotone():
    """m = 4: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, then 0.04 * 1 = 0.04 is raised
    to the 0.06 before it."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.5]) == [None, 0.5]
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []


def test_t_interval_from_a_seed_spread_matches_the_one_from_the_seeds():
    values = [1.0, 2.0, 3.0]
    assert t_interval(2.0, np.std(values, ddof=1), 3) == pytest.approx(seed_interval(values)["ci"])
    assert t_interval(2.0, None, 3) == t_interval(2.0, 0.5, 1) == [None, None]


def test_steps_are_epochs_times_batches_per_epoch():
    assert steps(10, 1000, {"train": {"batch_size": 128}}) == 80  # ceil(1000 / 128) = 8
    assert steps(10, 1024, {"train": {"batch_size": 128}}) == 80
    assert steps(10, 1025, {"train": {"batch_size": 128}}) == 90
    assert steps(10, 1000, {"train": {}}) is None and steps(10, 1000, {}) is None
    assert steps(None, 1000, {"train": {"batch_size": 128}}) is None  # T not known
