"""The two-factor law of the gap (docs/design.md §6.7): where a sweep varies both epochs T and size
N, log10 gap = a + alpha log10 T - beta log10 N, fitted by least squares over the cells in the
fitted regime, with a bootstrap over seeds and evaluation pairs on alpha and beta; and the gap ratio
of cells with the same T*N (the same optimiser steps at a fixed batch size), which tells epochs from
steps."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

import numpy as np
from scipy import stats

from mia.report.fits import left_out
from mia.report.stats import IDENTITY, seed_mean_gap_table

KEY = "tn_law"  # fits.json's key of the fit ("tn_law@<model, arm>" where a sweep has several)
EXPECTED = 1.0  # the T/N bound: alpha = beta = 1 (docs/design.md §6.2)
ENOUGH_CELLS = 8  # a fit rests on enough data with at least this many fitted cells ...
ENOUGH_SEEDS = 2  # ... of at least this many training seeds each
MAX_INVALID = (
    0.05  # share of bootstrap replicates with a non-positive gap a fit tolerates (as fits.py)
)
_ARM = tuple(k for k in IDENTITY if k not in ("nonmembers", "epochs", "size"))


def grids(pts) -> dict:
    """{name: i.i.d. points} of every model and arm whose points take two values or more of both T
    and N, sorted by T then N; the name is KEY, or KEY@<model, arm> where there are several."""
    groups = defaultdict(list)
    for p in pts:
        if p["nonmembers"] == "iid":
            groups[tuple(p[k] for k in _ARM)].append(p)
    found = {
        key: sorted(ps, key=lambda p: (p["epochs"], p["size"]))
        for key, ps in groups.items()
        if len({p["epochs"] for p in ps}) >= 2 and len({p["size"] for p in ps}) >= 2
    }
    if len(found) == 1:
        return {KEY: next(iter(found.values()))}
    return {
        f"{KEY}@" + ",".join(f"{k}={v}" for k, v in zip(_ARM, key, strict=True)): ps
        for key, ps in sorted(found.items(), key=str)
    }


def fit_law(ps, n_bootstrap: int, seed: int = 0) -> dict:
    """The two-factor fit of one grid's points (module docstring), the cells it used and left out
    (with the reason, fits.left_out), whether it rests on enough cells, and the equal-steps
    ratios."""
    reasons = [left_out(p) for p in ps]
    keep = [p for p, why in zip(ps, reasons, strict=True) if why is None]
    seeded = sum(p["n_seeds"] >= ENOUGH_SEEDS for p in keep)
    out = {
        "cells": [_cell(p) for p in keep],
        "excluded": [
            {**_cell(p), "reason": why}
            for p, why in zip(ps, reasons, strict=True)
            if why is not None
        ],
        "n_points": len(keep),
        "n_cells_enough_seeds": seeded,
        "enough_cells": seeded >= ENOUGH_CELLS,
        "expected": EXPECTED,
    }
    positive = [p for p in ps if p["gap_mean"] > 0]
    # One bootstrap table for the whole grid: the fit and the ratios share each replicate's draw of
    # pairs.
    table = (
        seed_mean_gap_table([p["_cos"] for p in positive], n_bootstrap, seed)
        if n_bootstrap and positive and all(p["_cos"] is not None for p in positive)
        else None
    )
    try:
        if table is None:
            fit = ols_law(keep)
        else:
            column = {id(p): c for c, p in enumerate(positive)}
            fit = bootstrap_law(keep, table[:, [column[id(p)] for p in keep]])
        fit["verdict"] = verdict(fit["alpha_ci95"], fit["beta_ci95"])
        out.update(fit)
    except ValueError as err:
        out["error"] = str(err)
    out["equal_steps"] = equal_steps(positive, table)
    return out


def _cell(p) -> dict:
    return {
        "epochs": p["epochs"],
        "size": p["size"],
        "gap": p["gap_mean"],
        "gap_ci95": p["gap_ci"],
        "n_seeds": p["n_seeds"],
    }


def design(ps) -> np.ndarray:
    """The least-squares design of the law: columns 1, log10 T and -log10 N, one row per cell.
    Refused unless the cells separate T from N (two values of each, not tied along one line)."""
    x = np.column_stack(
        [np.ones(len(ps)), np.log10([p["epochs"] for p in ps]), -np.log10([p["size"] for p in ps])]
    )
    if len(ps) < 3 or np.linalg.matrix_rank(x) < 3:
        raise ValueError(
            f"the {len(ps)} fitted cells do not separate T from N: a, alpha and beta need at least "
            "three cells with two values of T and two of N, not all on one line"
        )
    return x


def solve(x, gaps) -> np.ndarray:
    """(a, alpha, beta) of log10 gap on the design `x`: [3], or [3, B] for gaps of shape
    [B, cells]."""
    return np.linalg.lstsq(x, np.log10(np.asarray(gaps, np.float64)).T, rcond=None)[0]


def bootstrap_law(ps, replicates) -> dict:
    """The law through the observed seed-mean gaps, with percentile 95% intervals on alpha and beta
    from the same fit of every bootstrap replicate ([B, cells], seed_mean_gap_table). A replicate
    with a non-positive gap has no logarithm: counted in n_invalid and left out, and the fit is
    refused past MAX_INVALID of them, as a one-factor slope is."""
    x = design(ps)
    replicates = np.asarray(replicates, np.float64)
    valid = (replicates > 0).all(axis=1)
    n_invalid = int((~valid).sum())
    if n_invalid > MAX_INVALID * len(replicates):
        raise ValueError(
            f"{n_invalid} of {len(replicates)} bootstrap replicates have a non-positive gap: "
            "the noisiest cell cannot be fitted on a log scale"
        )
    a, alpha, beta = solve(x, [p["gap_mean"] for p in ps])
    reps = solve(x, replicates[valid])
    ci = [[float(v) for v in np.percentile(reps[i], [2.5, 97.5])] for i in (1, 2)]
    return {
        "a": float(a),
        "alpha": float(alpha),
        "alpha_ci95": ci[0],
        "beta": float(beta),
        "beta_ci95": ci[1],
        "method": "bootstrap over seeds and evaluation pairs",
        "n_bootstrap": int(len(replicates)),
        "n_invalid": n_invalid,
    }


def ols_law(ps) -> dict:
    """The law through the seed means with t-intervals from the residuals, where there are no
    per-pair cosines to resample (n_bootstrap=0, or a job's scores.parquet failed the check); no
    interval with three cells, where the plane is exact."""
    x = design(ps)
    y = np.log10([p["gap_mean"] for p in ps])
    coef = solve(x, [p["gap_mean"] for p in ps])
    dof = len(ps) - 3
    ci = [[None, None], [None, None]]
    if dof > 0:
        s2 = float(((y - x @ coef) ** 2).sum()) / dof
        se = np.sqrt(np.diag(s2 * np.linalg.inv(x.T @ x)))
        half = stats.t.ppf(0.975, dof) * se
        ci = [[float(coef[i] - half[i]), float(coef[i] + half[i])] for i in (1, 2)]
    return {
        "a": float(coef[0]),
        "alpha": float(coef[1]),
        "alpha_ci95": ci[0],
        "beta": float(coef[2]),
        "beta_ci95": ci[1],
        "method": "OLS t-interval through the seed means",
    }


def verdict(alpha_ci, beta_ci) -> str | None:
    """ "T/N holds" where both 95% intervals contain 1, "holds in part" where one does, "fails"
    where neither does; None without intervals."""
    if None in (*alpha_ci, *beta_ci):
        return None
    inside = sum(lo <= EXPECTED <= hi for lo, hi in (alpha_ci, beta_ci))
    return {2: "T/N holds", 1: "holds in part", 0: "fails"}[inside]


def equal_steps(ps, table) -> list[dict]:
    """Every two cells with the same T*N (the same optimiser steps at a fixed batch size, up to the
    last batch's rounding): the gap of the one with more epochs over the other's, with a 95%
    interval from the bootstrap `table` ([B, len(ps)], or None: no interval). Steps alone predict 1;
    T/N predicts (T1 / T2) (N2 / N1)."""
    by_samples = defaultdict(list)
    for i, p in enumerate(ps):
        by_samples[p["epochs"] * p["size"]].append(i)
    out = []
    for samples, idx in sorted(by_samples.items()):
        for i, j in combinations(sorted(idx, key=lambda i: -ps[i]["epochs"]), 2):
            more, fewer = ps[i], ps[j]
            entry = {
                "samples": samples,
                "more_epochs": {"epochs": more["epochs"], "size": more["size"]},
                "fewer_epochs": {"epochs": fewer["epochs"], "size": fewer["size"]},
                "ratio": more["gap_mean"] / fewer["gap_mean"],
                "ratio_ci95": [None, None],
                "t_over_n_predicts": more["epochs"]
                / fewer["epochs"]
                * fewer["size"]
                / more["size"],
                "both_fitted": left_out(more) is None and left_out(fewer) is None,
            }
            if table is not None:
                valid = table[:, j] > 0  # a replicate whose denominator vanished has no ratio
                ratios = table[valid, i] / table[valid, j]
                entry["n_invalid"] = int((~valid).sum())
                if entry["n_invalid"] <= MAX_INVALID * len(table):
                    entry["ratio_ci95"] = [float(v) for v in np.percentile(ratios, [2.5, 97.5])]
            lo, hi = entry["ratio_ci95"]
            entry["contains_1"] = None if lo is None else bool(lo <= 1 <= hi)
            entry["contains_t_over_n"] = (
                None if lo is None else bool(lo <= entry["t_over_n_predicts"] <= hi)
            )
            out.append(entry)
    return out


def markdown(law_results) -> list[str]:
    """report.md's section on the two-factor fit; [] where the sweep does not vary both T and N."""
    if not law_results:
        return []
    md = [
        "## Epochs and size together: log10 gap = a + alpha log10 T - beta log10 N",
        "",
        "One plane through every cell in the fitted regime (left-out cells as in the scaling "
        'fits). T/N predicts alpha = beta = 1: "T/N holds" where both 95% intervals contain 1, '
        '"holds in part" where one does, "fails" where neither does (docs/design.md §6.7).',
        "",
    ]
    for name, fit in law_results.items():
        if "error" in fit:
            md.append(f"- **{name}**: no fit ({fit['error']})")
        else:
            md.append(
                f"- **{name}**: alpha {fit['alpha']:.2f} {_ci(fit['alpha_ci95'])}, beta "
                f"{fit['beta']:.2f} {_ci(fit['beta_ci95'])} over {fit['n_points']} cells, "
                f"{fit['method']}: **{fit['verdict'] or 'no interval, no verdict'}**"
            )
        md.append(
            f"  - {fit['n_cells_enough_seeds']} fitted cells with >= {ENOUGH_SEEDS} seeds: "
            + (
                "enough"
                if fit["enough_cells"]
                else f"fewer than {ENOUGH_CELLS}, a fit to read with care"
            )
        )
        for ex in fit["excluded"]:
            md.append(
                f"  - left out T={ex['epochs']}, N={ex['size']} (gap {ex['gap']:.4g}): "
                f"{ex['reason']}"
            )
        for s in fit["equal_steps"]:
            m, f = s["more_epochs"], s["fewer_epochs"]
            md.append(
                f"  - equal T*N = {s['samples']:g}: gap(T={m['epochs']}, N={m['size']}) / "
                f"gap(T={f['epochs']}, N={f['size']}) = {s['ratio']:.2f} {_ci(s['ratio_ci95'])}; "
                f"steps alone predict 1, T/N {s['t_over_n_predicts']:.2f}"
                + ("" if s["both_fitted"] else " (a cell outside the fitted regime)")
            )
    return md


def _ci(ci) -> str:
    lo, hi = ci
    return "(no interval)" if lo is None else f"[{lo:.2f}, {hi:.2f}]"
