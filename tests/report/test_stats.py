"""The two-level bootstrap of a condition's seed-mean gap (mia/report/stats.py)."""
import numpy as np
import pytest

from mia.report.stats import seed_mean_gaps


def test_seed_mean_gaps_resample_seeds_and_pairs():
    members, nonmembers = np.full(50, 0.5), np.full(50, 0.2)
    # Two seeds with constant cosines: only the draw of seeds moves the mean, to 0.3, 0.35 or 0.4.
    reps = seed_mean_gaps([(members, nonmembers), (members + 0.1, nonmembers)], 300, seed=0)
    assert set(np.round(reps, 6)) == {0.3, 0.35, 0.4}
    # One seed: only the pairs move it, around the observed gap.
    noisy = np.random.default_rng(0).normal(0.5, 0.1, 50)
    reps = seed_mean_gaps([(noisy, nonmembers)], 300, seed=0)
    assert reps.std() == pytest.approx(0.1 / np.sqrt(50), rel=0.3)
