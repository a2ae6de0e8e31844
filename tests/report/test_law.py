"""The two-factor law of the gap (mia/report/law.py) on simulated T x N grids whose exponents are
known: the fit recovers them with intervals that contain them, the verdict reads the intervals, the
cells count, and cells with equal T*N are compared."""

import numpy as np
import pytest

from mia.report.law import KEY, equal_steps, fit_law, grids, verdict
from mia.report.stats import seed_mean_gap_table, seed_mean_gaps

TS, NS = (10, 20, 40, 80), (1000, 4000, 16000)


def grid_points(
    rng, gap_of, ts=TS, ns=NS, n_seeds=2, seed_sd=0.03, pair_sd=0.0005, k=300, gaussian_auc=0.6
):
    """Points of a T x N grid as stats.points makes them: per-seed cosines whose seed-mean gap is
    gap_of(T, N) times a log-normal training-seed effect (sd `seed_sd` in log10), plus pair
    noise."""
    pts = []
    for t in ts:
        for n in ns:
            jobs = [
                (
                    rng.normal(0.3, pair_sd, k) + gap_of(t, n) * 10 ** rng.normal(0, seed_sd),
                    rng.normal(0.3, pair_sd, k),
                )
                for _ in range(n_seeds)
            ]
            lo, hi = np.percentile(seed_mean_gaps(jobs, 200, 0), [2.5, 97.5])
            pts.append(
                {
                    "nonmembers": "iid",
                    "epochs": t,
                    "size": n,
                    "model": "tiny",
                    "params": 1,
                    "defense": "none",
                    "weight_decay": 0.1,
                    "init": "scratch",
                    "n_seeds": n_seeds,
                    "gap_mean": float(np.mean([m.mean() - x.mean() for m, x in jobs])),
                    "gap_ci": [float(lo), float(hi)],
                    "gaussian_auc": gaussian_auc,
                    "_cos": jobs,
                    "_rows": [],
                }
            )
    return pts


def test_the_fit_recovers_known_exponents_and_says_which_hold():
    fit = fit_law(grid_points(np.random.default_rng(0), lambda t, n: 3 * t**0.5 / n), 300, seed=1)
    assert fit["alpha"] == pytest.approx(0.5, abs=0.05) and fit["beta"] == pytest.approx(
        1.0, abs=0.05
    )
    assert (
        fit["alpha_ci95"][0] < 0.5 < fit["alpha_ci95"][1]
        and fit["beta_ci95"][0] < 1.0 < fit["beta_ci95"][1]
    )
    assert fit["alpha_ci95"][1] < 1.0 and fit["verdict"] == "holds in part"
    assert fit["a"] == pytest.approx(np.log10(3), abs=0.2)
    assert fit["n_points"] == 12 and fit["n_invalid"] == 0 and fit["method"].startswith("bootstrap")
    assert (
        fit["n_cells_enough_seeds"] == 12 and fit["enough_cells"] is True and fit["excluded"] == []
    )

    holds = fit_law(grid_points(np.random.default_rng(0), lambda t, n: 3 * t / n), 300, seed=1)
    assert holds["verdict"] == "T/N holds"
    fails = fit_law(
        grid_points(np.random.default_rng(0), lambda t, n: 0.05 * t**0.3 / n**0.5), 300, seed=1
    )
    assert fails["alpha"] == pytest.approx(0.3, abs=0.05) and fails["beta"] == pytest.approx(
        0.5, abs=0.05
    )
    assert fails["verdict"] == "fails"


def test_the_intervals_widen_with_the_seed_effect():
    rng = np.random.default_rng(2)
    quiet = fit_law(grid_points(rng, lambda t, n: 3 * t / n, seed_sd=0.0), 300)
    loud = fit_law(grid_points(rng, lambda t, n: 3 * t / n, seed_sd=0.1), 300)
    width = [f["alpha_ci95"][1] - f["alpha_ci95"][0] for f in (quiet, loud)]
    assert width[1] > 3 * width[0]


def test_left_out_cells_are_listed_and_the_cells_counted():
    rng = np.random.default_rng(3)
    pts = grid_points(rng, lambda t, n: 3 * t / n)
    pts[0]["gaussian_auc"] = 0.99  # T = 10, N = 1000: members at the model's ceiling
    fit = fit_law(pts, 200)
    assert fit["n_points"] == 11 and len(fit["cells"]) == 11
    (ex,) = fit["excluded"]
    assert (ex["epochs"], ex["size"]) == (10, 1000) and ex["reason"].startswith("saturated")
    one_seed = fit_law(grid_points(rng, lambda t, n: 3 * t / n, n_seeds=1), 200)
    assert one_seed["n_cells_enough_seeds"] == 0 and one_seed["enough_cells"] is False
    small = fit_law(grid_points(rng, lambda t, n: 3 * t / n, ts=(10, 40), ns=(1000, 4000)), 200)
    assert (
        small["n_cells_enough_seeds"] == 4 and small["enough_cells"] is False and small["verdict"]
    )


def test_without_cosines_the_plane_is_fitted_through_the_means():
    pts = grid_points(
        np.random.default_rng(4), lambda t, n: 2 * t**0.8 / n**1.2, seed_sd=0.0, pair_sd=1e-9
    )
    exact = fit_law(pts, 0)
    assert exact["method"] == "OLS t-interval through the seed means"
    assert exact["alpha"] == pytest.approx(0.8, abs=1e-4) and exact["beta"] == pytest.approx(
        1.2, abs=1e-4
    )
    assert exact["alpha_ci95"][1] - exact["alpha_ci95"][0] < 1e-3
    three = fit_law(
        [p for p in pts if (p["epochs"], p["size"]) in ((10, 1000), (20, 1000), (10, 4000))], 0
    )
    assert three["alpha"] == pytest.approx(0.8, abs=1e-4) and three["alpha_ci95"] == [None, None]
    assert three["verdict"] is None


def test_cells_that_do_not_separate_t_from_n_are_refused():
    pts = grid_points(np.random.default_rng(5), lambda t, n: 3 * t / n, ts=(10, 40, 160))
    diagonal = [
        p for p in pts if p["size"] == 100 * p["epochs"]
    ]  # T and N move together: alpha - beta alone
    assert "do not separate T from N" in fit_law(diagonal, 100)["error"]
    one_t = [p for p in pts if p["epochs"] == 40]
    assert "do not separate T from N" in fit_law(one_t, 100)["error"]


def test_verdict_reads_both_intervals():
    assert verdict([0.8, 1.2], [0.9, 1.1]) == "T/N holds"
    assert verdict([0.3, 0.6], [0.9, 1.1]) == verdict([0.8, 1.2], [1.2, 1.5]) == "holds in part"
    assert verdict([0.3, 0.6], [1.2, 1.5]) == "fails"
    assert verdict([None, None], [0.9, 1.1]) is None


def test_equal_steps_tell_epochs_from_steps():
    rng = np.random.default_rng(6)
    pts = [p for p in grid_points(rng, lambda t, n: 3 * t / n) if p["gap_mean"] > 0]
    ratios = equal_steps(pts, seed_mean_gap_table([p["_cos"] for p in pts], 300))
    # 10 x 4k = 40 x 1k, 20 x 4k = 80 x 1k, 10 x 16k = 40 x 4k, 20 x 16k = 80 x 4k
    assert sorted(r["samples"] for r in ratios) == [40000, 80000, 160000, 320000]
    first = next(r for r in ratios if r["samples"] == 40000)
    assert first["more_epochs"] == {"epochs": 40, "size": 1000} and first["t_over_n_predicts"] == 16
    assert (
        first["ratio"] == pytest.approx(16, rel=0.15)
        and first["contains_t_over_n"]
        and not first["contains_1"]
    )
    steps_only = [
        p for p in grid_points(rng, lambda t, n: 1e-4 * (t * n) ** 0.5) if p["gap_mean"] > 0
    ]
    ratios = equal_steps(steps_only, seed_mean_gap_table([p["_cos"] for p in steps_only], 300))
    assert all(r["contains_1"] for r in ratios)
    assert all(
        r["ratio_ci95"] == [None, None] and r["contains_1"] is None
        for r in equal_steps(steps_only, None)
    )


def test_grids_need_two_values_of_both_factors():
    pts = grid_points(
        np.random.default_rng(7), lambda t, n: 3 * t / n, ts=(10, 40), ns=(1000, 4000), n_seeds=1
    )
    assert list(grids(pts)) == [KEY]
    assert grids([p for p in pts if p["epochs"] == 40]) == {}
    assert grids([{**p, "nonmembers": "ood"} for p in pts]) == {}
    wide = [{**p, "model": "wide"} for p in pts]
    assert sorted(grids(pts + wide)) == [
        f"{KEY}@model=tiny,params=1,defense=none,weight_decay=0.1",
        f"{KEY}@model=wide,params=1,defense=none,weight_decay=0.1",
    ]
