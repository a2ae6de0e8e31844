"""The sweep report's scaling fits (mia/report/fits.py) pinned on hand-worked and simulated sweeps:
the OLS fit through seed means and the bootstrap slope, its interval and its curvature."""

import json
import math

import numpy as np
import pytest

from mia.report.fits import bootstrap_loglog_slope, fit_loglog
from mia.report.stats import seed_mean_gap_table
from tests.helpers.sweeps import scaling_sweep


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


def test_bootstrap_slope_recovers_known_slope_and_spread():
    sizes = [1000, 2000, 4000, 8000, 16000]
    rng = np.random.default_rng(0)

    def ols(conditions):
        means = [np.mean([m.mean() - n.mean() for m, n in jobs]) for jobs in conditions]
        return np.polyfit(np.log10(sizes), np.log10(means), 1)[0], means

    # The spread of the slope over fresh experiments, which the bootstrap of one experiment must
    # match.
    true_sd = np.std([ols(scaling_sweep(rng, sizes, 6))[0] for _ in range(300)], ddof=1)
    conditions = scaling_sweep(rng, sizes, 6)
    slope, means = ols(conditions)
    fit = bootstrap_loglog_slope(sizes, seed_mean_gap_table(conditions, 400, seed=1), means)
    assert fit["slope"] == pytest.approx(slope)
    assert abs(fit["slope"] + 1) < 3 * true_sd
    assert fit["slope_ci95"][0] < -1 < fit["slope_ci95"][1]
    assert 0.6 < fit["slope_std"] / true_sd < 1.5, (fit["slope_std"], true_sd)
    assert fit["n_invalid"] == 0 and fit["n_points"] == 5

    # Without a seed effect the interval is narrower: the bootstrap sees the training seeds' spread.
    quiet = bootstrap_loglog_slope(
        sizes, seed_mean_gap_table(scaling_sweep(rng, sizes, 6, seed_sd=0.0), 400), means
    )
    assert quiet["slope_std"] < 0.6 * fit["slope_std"]


def test_bootstrap_slope_refuses_unresolved_points():
    reps = np.tile([0.1, 0.01], (100, 1))
    reps[:10, 1] = -0.001  # 10% of the replicates lose the gap at the large end
    with pytest.raises(ValueError, match="non-positive gap"):
        bootstrap_loglog_slope([1000, 10000], reps, [0.1, 0.01])
    with pytest.raises(ValueError, match="non-positive mean gap"):
        bootstrap_loglog_slope([1000, 10000], reps, [0.1, -0.01])


def test_bootstrap_slope_flags_a_bend():
    sizes = [1000, 2000, 4000, 8000, 16000]
    rng = np.random.default_rng(3)
    straight = scaling_sweep(rng, sizes, 4, seed_sd=0.02)
    means = [np.mean([m.mean() - n.mean() for m, n in jobs]) for jobs in straight]
    fit = bootstrap_loglog_slope(sizes, seed_mean_gap_table(straight, 300), means)
    assert fit["curvature_ci95"][0] < 0 < fit["curvature_ci95"][1]
    # Bend it: local slopes from about -0.2 to -1.8, like a target that saturates at small N.
    bent = scaling_sweep(rng, sizes, 4, slope=-0.2, bend=-0.7, seed_sd=0.02)
    means = [np.mean([m.mean() - n.mean() for m, n in jobs]) for jobs in bent]
    fit = bootstrap_loglog_slope(sizes, seed_mean_gap_table(bent, 300), means)
    assert fit["curvature"] == pytest.approx(-0.7, abs=0.15) and fit["curvature_ci95"][1] < 0
