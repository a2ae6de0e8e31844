"""The two-factor law of the gap (mia/report/law.py) on simulated T x N grids whose exponents are
known: the fit recovers them with intervals that contain them, cells that cannot speak are left out
with their reason, the misfit widens the intervals where the plane misses, the collapse test tells
one curve of T/N from a grid that is not one, and cells with equal T*N are compared."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from mia.report.law import DEFAULTS, KEY, equal_steps, fit_law, grids, settings, verdict
from mia.report.stats import seed_mean_gap_table, seed_mean_gaps, steps
from tests.helpers.config import CONF

TS, NS = (10, 20, 40, 80), (1000, 4000, 16000)


def grid_points(
    rng,
    gap_of,
    ts=TS,
    ns=NS,
    n_seeds=2,
    seed_sd=0.03,
    pair_sd=0.0005,
    k=300,
    gaussian_auc=0.6,
    batch=None,
):
    """Points of a T x N grid as stats.points makes them: per-seed cosines whose seed-mean gap is
    gap_of(T, N) times a log-normal training-seed effect (sd `seed_sd` in log10), plus pair noise;
    a loss gap of minus twice the cosine gap and a d' of ten times it, seed by seed; optimiser
    steps at batch size `batch` (None: not recorded)."""
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
            gaps = np.array([m.mean() - x.mean() for m, x in jobs])
            spread = (lambda v: float(np.std(v, ddof=1))) if n_seeds > 1 else (lambda v: None)
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
                    "steps": steps(t, n, {"train": {"batch_size": batch}} if batch else {}),
                    "n_seeds": n_seeds,
                    "gap_mean": float(gaps.mean()),
                    "gap_seed_std": spread(gaps),
                    "gap_ci": [float(lo), float(hi)],
                    "loss_gap_mean": float(-2 * gaps.mean()),
                    "loss_gap_seed_std": spread(-2 * gaps),
                    "d_prime_mean": float(10 * gaps.mean()),
                    "d_prime_seed_std": spread(10 * gaps),
                    "member_cos_mean": float(np.mean([m.mean() for m, _ in jobs])),
                    "gaussian_auc": gaussian_auc,
                    "_cos": jobs,
                    "_rows": [],
                }
            )
    return pts


def width(ci) -> float:
    return ci[1] - ci[0]


def test_the_fit_recovers_known_exponents_and_says_which_hold():
    fit = fit_law(grid_points(np.random.default_rng(0), lambda t, n: 3 * t**0.5 / n), 300, seed=1)
    assert fit["alpha"] == pytest.approx(0.5, abs=0.05) and fit["beta"] == pytest.approx(
        1.0, abs=0.05
    )
    for kind in ("_ci95", "_ci95_seeds"):
        assert fit["alpha" + kind][0] < 0.5 < fit["alpha" + kind][1], kind
        assert fit["beta" + kind][0] < 1.0 < fit["beta" + kind][1], kind
    assert fit["alpha_ci95"][1] < 1.0 and fit["verdict"] == "holds in part"
    assert fit["excludes_1"] == ["alpha"]
    assert fit["a"] == pytest.approx(np.log10(3), abs=0.2)
    assert fit["n_points"] == 12 and fit["method"].startswith("OLS")
    assert fit["region"] == {"T": [10, 80], "N": [1000, 16000]}
    boot = fit["bootstrap"]
    assert boot["n_invalid"] == 0 and boot["alpha_ci95"][0] < 0.5 < boot["alpha_ci95"][1]
    assert (
        fit["n_cells_enough_seeds"] == 12 and fit["enough_cells"] is True and fit["excluded"] == []
    )

    holds = fit_law(grid_points(np.random.default_rng(0), lambda t, n: 3 * t / n), 300, seed=1)
    assert holds["verdict"] == "T/N holds" and holds["excludes_1"] == []
    for kind in ("_ci95", "_ci95_seeds"):
        for k in ("alpha", "beta"):
            assert holds[k + kind][0] < 1.0 < holds[k + kind][1], k + kind
    # the plane describes the grid: its residuals are the seeds' noise
    assert holds["lack_of_fit"]["p"] > 0.05 and holds["r2"] > 0.95
    fails = fit_law(
        grid_points(np.random.default_rng(0), lambda t, n: 0.05 * t**0.3 / n**0.5), 300, seed=1
    )
    assert fails["alpha"] == pytest.approx(0.3, abs=0.05) and fails["beta"] == pytest.approx(
        0.5, abs=0.05
    )
    assert fails["verdict"] == "fails" and fails["excludes_1"] == ["alpha", "beta"]


def test_every_measure_gets_its_plane_where_the_jobs_carry_it():
    pts = grid_points(np.random.default_rng(8), lambda t, n: 3 * t / n)
    fit = fit_law(pts, 0)
    gap, loss, dprime = (fit["measures"][k] for k in ("gap", "loss_gap", "d_prime"))
    # the loss gap is fitted as non-member minus member loss; scaling a measure moves a alone
    for other, scale in ((loss, 2), (dprime, 10)):
        assert other["alpha"] == pytest.approx(gap["alpha"])
        assert other["beta"] == pytest.approx(gap["beta"])
        assert other["a"] == pytest.approx(gap["a"] + np.log10(scale))
    old = [{**p, "loss_gap_mean": None, "d_prime_mean": None} for p in pts]
    fit = fit_law(old, 0)
    assert fit["verdict"] == "T/N holds"
    assert "no loss gap" in fit["measures"]["loss_gap"]["error"]
    assert "no d'" in fit["measures"]["d_prime"]["error"]


def test_the_intervals_widen_with_the_seed_effect():
    rng = np.random.default_rng(2)
    quiet = fit_law(grid_points(rng, lambda t, n: 3 * t / n, seed_sd=0.0), 300)
    loud = fit_law(grid_points(rng, lambda t, n: 3 * t / n, seed_sd=0.1), 300)
    for kind in ("alpha_ci95", "alpha_ci95_seeds"):
        assert width(loud[kind]) > 3 * width(quiet[kind]), kind


def test_under_trained_and_saturated_cells_are_left_out_with_their_reason():
    rng = np.random.default_rng(3)
    # batch 128: T = 10 and 20 at N = 1k take 80 and 160 optimiser steps, under min_steps = 300
    pts = grid_points(rng, lambda t, n: 3 * t / n, batch=128)
    pts[-1]["gaussian_auc"] = 0.99  # T = 80, N = 16k: members at the model's ceiling
    pts[-2]["member_cos_mean"] = 0.97  # T = 80, N = 4k: member cosines at the ceiling
    fit = fit_law(pts, 200)
    assert fit["n_points"] == 8 and len(fit["cells"]) == 8
    why = {(ex["epochs"], ex["size"]): ex["reason"] for ex in fit["excluded"]}
    assert sorted(why) == [(10, 1000), (20, 1000), (80, 4000), (80, 16000)]
    assert why[(10, 1000)].startswith("under-trained: 80 optimiser steps")
    assert "analysis.law.min_steps = 300" in why[(20, 1000)]
    assert why[(80, 4000)].startswith("saturated: mean member cosine 0.970")
    assert why[(80, 16000)].startswith("saturated: Gaussian AUC")
    assert {c["steps"] for c in fit["cells"]} >= {320, 640}
    fewer = fit_law(pts, 0, setting={"min_steps": 100})
    assert (20, 1000) in {(c["epochs"], c["size"]) for c in fewer["cells"]}
    assert fewer["settings"] == {**DEFAULTS, "min_steps": 100}

    one_seed = fit_law(grid_points(rng, lambda t, n: 3 * t / n, n_seeds=1), 200)
    assert one_seed["n_cells_enough_seeds"] == 0 and one_seed["enough_cells"] is False
    assert one_seed["alpha_ci95_seeds"] == [None, None] and one_seed["alpha_ci95"][0] is not None
    small = fit_law(grid_points(rng, lambda t, n: 3 * t / n, ts=(10, 40), ns=(1000, 4000)), 200)
    assert (
        small["n_cells_enough_seeds"] == 4 and small["enough_cells"] is False and small["verdict"]
    )


def test_the_settings_default_to_the_shipped_config():
    shipped = OmegaConf.to_container(OmegaConf.load(Path(CONF) / "analysis" / "default.yaml"))
    assert shipped["law"] == DEFAULTS
    assert settings({}) == DEFAULTS
    assert settings({"analysis": {"law": {"min_steps": 50}}})["min_steps"] == 50


def test_misfit_widens_the_intervals_where_the_plane_misses():
    """A planted log T x log N interaction: the plane's residuals exceed the seeds' noise, so the
    intervals that carry the misfit are wider than the seeds' own, and the interaction term finds
    it."""

    def bent(t, n):
        lt, ln = np.log10(t / 28.3), np.log10(n / 4000)
        return 3 * t / n * 10 ** (-0.8 * lt * ln)

    fit = fit_law(grid_points(np.random.default_rng(9), bent, seed_sd=0.01), 0)
    for k in ("alpha", "beta"):
        assert width(fit[f"{k}_ci95"]) > 2 * width(fit[f"{k}_ci95_seeds"]), k
    assert fit["lack_of_fit"]["p"] < 0.01 and fit["residual_sd"] > 2 * fit["seed_sd"]
    inter = fit["interaction"]
    assert inter["gamma_ci95"][0] < -0.8 < inter["gamma_ci95"][1]
    assert inter["vs_plane"]["p"] < 0.01
    assert inter["centre"]["T"] == pytest.approx(28.3, rel=0.01)
    straight = fit_law(grid_points(np.random.default_rng(9), lambda t, n: 3 * t / n), 0)
    assert straight["interaction"]["vs_plane"]["p"] > 0.05


def test_the_collapse_test_tells_one_curve_of_t_over_n_from_a_grid_that_is_not_one():
    def curved(t, n):  # a bent curve of T/N alone: no plane, yet one curve
        u = np.log10(t / n) + 2
        return 0.02 * 10 ** (1.0 * u - 0.3 * u**2)

    one = fit_law(grid_points(np.random.default_rng(10), curved), 0)["collapse"]
    assert one["t_over_n"] == "collapses" and one["steps"] == "does not collapse"
    assert one["models"]["t_over_n"]["residual_sd"] < one["models"]["plane"]["residual_sd"]
    apart = fit_law(grid_points(np.random.default_rng(10), lambda t, n: 0.05 * t**0.3 / n**0.5), 0)[
        "collapse"
    ]
    assert apart["t_over_n"] == "does not collapse"
    assert apart["models"]["t_over_n"]["vs_general"]["p"] < 0.01


def test_an_upper_bound_is_stated_with_its_constant():
    pts = grid_points(np.random.default_rng(11), lambda t, n: 0.05 * t**0.3 / n**0.5)
    bound = fit_law(pts, 0)["measures"]["gap"]["upper_bound"]
    ratios = [p["gap_mean"] * p["size"] / p["epochs"] for p in pts]
    assert bound["C"] == pytest.approx(max(ratios)) and bound["informative"] is False
    assert bound["ratio_range"] == pytest.approx([min(ratios), max(ratios)])
    assert bound["spread"] == pytest.approx(max(ratios) / min(ratios))
    top = pts[int(np.argmax(ratios))]
    assert bound["at"] == {"epochs": top["epochs"], "size": top["size"]}


def test_without_cosines_the_plane_is_fitted_through_the_means():
    pts = grid_points(
        np.random.default_rng(4), lambda t, n: 2 * t**0.8 / n**1.2, seed_sd=0.0, pair_sd=1e-9
    )
    exact = fit_law(pts, 0)
    assert exact["method"].startswith("OLS") and "bootstrap" not in exact
    assert exact["alpha"] == pytest.approx(0.8, abs=1e-4) and exact["beta"] == pytest.approx(
        1.2, abs=1e-4
    )
    assert exact["alpha_ci95"][1] - exact["alpha_ci95"][0] < 1e-3
    three = fit_law(
        [p for p in pts if (p["epochs"], p["size"]) in ((10, 1000), (20, 1000), (10, 4000))], 0
    )
    assert three["alpha"] == pytest.approx(0.8, abs=1e-4) and three["alpha_ci95"] == [None, None]
    assert three["verdict"] is None and "error" in three["interaction"]


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
        f"{KEY}@model=tiny,params=1,defense=none,weight_decay=0.1,init=scratch",
        f"{KEY}@model=wide,params=1,defense=none,weight_decay=0.1,init=scratch",
    ]
