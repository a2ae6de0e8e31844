"""The sweep report's scaling fits (docs/design.md §6.4): log10 gap on log10 N at each fixed T, and
on log10 T at each fixed N, over the points in the fitted regime, with a bootstrap interval on the
slope."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from scipy import stats

from mia.report.stats import point_series, seed_mean_gap_table

# When a point of a scaling curve is left out of the fit (docs/design.md §6.4). Both are properties
# of the point itself, fixed before looking at the slope.
SATURATED_AUC = (
    0.95  # Gaussian AUC from the gap at or above this: members sit at the model's ceiling
)
NOISY_REL_CI = 0.5  # half-width of the gap's 95% interval above this fraction of the gap: noise


def left_out(p) -> str | None:
    """Why a point stays out of a scaling fit, or None: it is in the fitted regime."""
    mean, (lo, hi) = p["gap_mean"], p["gap_ci"]
    if mean <= 0:
        return "non-positive gap"
    if p["gaussian_auc"] >= SATURATED_AUC:
        return (
            f"saturated: Gaussian AUC {p['gaussian_auc']:.3f} >= {SATURATED_AUC} (members at the "
            "model's ceiling)"
        )
    if lo is not None and (lo <= 0 or (hi - lo) / 2 > NOISY_REL_CI * mean):
        return f"noisy: 95% CI [{lo:.4g}, {hi:.4g}] is wider than +-{NOISY_REL_CI:.0%} of the gap"
    return None


def fits(pts, n_bootstrap: int = 200, seed: int = 0) -> dict:
    """log10 gap on log10 N at each fixed T, and on log10 T at each fixed N (docs/design.md §6.4),
    over the points in the fitted regime; the curve's local slopes cover every point."""
    out = {}
    for x, expected in (("size", -1.0), ("epochs", 1.0)):
        for name, series in point_series(pts, x).items():
            reasons = [left_out(p) for p in series]
            keep = [p for p, why in zip(series, reasons, strict=True) if why is None]
            excluded = [
                {"x": float(p[x]), "y": p["gap_mean"], "reason": why}
                for p, why in zip(series, reasons, strict=True)
                if why is not None
            ]
            xs, gaps = [p[x] for p in keep], [p["gap_mean"] for p in keep]
            try:
                if len(keep) >= 2 and n_bootstrap and all(p["_cos"] is not None for p in keep):
                    reps = seed_mean_gap_table([p["_cos"] for p in keep], n_bootstrap, seed)
                    fit = bootstrap_loglog_slope(xs, reps, gaps)
                else:
                    # a job's scores.parquet failed the check, or n_bootstrap=0: a t-interval
                    # through the means
                    fit = {
                        **fit_loglog(xs, gaps),
                        "method": "OLS t-interval through the seed means",
                    }
                    fit.pop("excluded")
                lo, hi = fit["slope_ci95"]
                fit["contains_expected"] = None if lo is None else bool(lo <= expected <= hi)
            except ValueError as err:
                fit = {"error": str(err)}
            pos = [p for p in series if p["gap_mean"] > 0]
            local = [
                {
                    "from": a[x],
                    "to": b[x],
                    "slope": float(np.log10(b["gap_mean"] / a["gap_mean"]) / np.log10(b[x] / a[x])),
                }
                for a, b in pairwise(pos)
            ]
            out[name] = {
                **fit,
                "x": x,
                "fitted_x": xs,
                "excluded": excluded,
                "local_slopes": local,
                "expected_slope": expected,
            }
    return out


def fit_loglog(x, y) -> dict:
    """OLS of log10 y on log10 x with a t-based 95% interval on the slope.

    Points with y <= 0 (a gap that vanished or flipped sign) or x <= 0 have no logarithm;
    they are excluded and listed, not silently dropped.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x ({x.size}) and y ({y.size}) differ in length")
    excluded = []
    for xi, yi in zip(x, y, strict=True):
        reason = (
            "non-finite value"
            if not (np.isfinite(xi) and np.isfinite(yi))
            else "non-positive x"
            if xi <= 0
            else "non-positive gap"
            if yi <= 0
            else None
        )
        if reason:
            excluded.append({"x": float(xi), "y": float(yi), "reason": reason})
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        raise ValueError(f"need >= 2 points with x > 0 and y > 0, got {int(keep.sum())}")
    lx, ly = np.log10(x[keep]), np.log10(y[keep])
    if np.ptp(lx) == 0:
        raise ValueError("all usable x values are equal; the slope is undefined")
    fit = stats.linregress(lx, ly)
    dof = lx.size - 2
    if dof > 0:  # with two points the line is exact and no interval exists
        half = stats.t.ppf(0.975, dof) * fit.stderr
        ci = [float(fit.slope - half), float(fit.slope + half)]
    else:
        ci = [None, None]
    return {
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "slope_ci95": ci,
        "n_points": int(lx.size),
        "excluded": excluded,
    }


def bootstrap_loglog_slope(x, replicates, point) -> dict:
    """Slope of log10 gap on log10 x with a percentile 95% interval from bootstrap replicates.

    `point[i]` is the observed seed-mean gap at x[i], `replicates` [B, len(x)] its bootstrap draws
    (seed_mean_gap_table). The point estimate is the OLS slope through the observed means; each
    replicate is fitted the same way. A replicate with a non-positive gap has no logarithm: it is
    counted in `n_invalid` and left out, and a fit with more than 5% invalid replicates is refused,
    since its interval would describe only the replicates that happened to stay positive. With three
    or more points, `curvature` is the quadratic coefficient of log10 gap in log10 x with its
    interval from the same replicates: an interval away from 0 says the points bend and one slope
    averages them.
    """
    x = np.asarray(x, np.float64)
    point = np.asarray(point, np.float64)
    replicates = np.asarray(replicates, np.float64)
    if x.size < 2 or np.ptp(np.log10(x)) == 0:
        raise ValueError(f"need >= 2 distinct x values, got {x.tolist()}")
    if (point <= 0).any():
        raise ValueError(f"non-positive mean gap at x={x[point <= 0].tolist()}: no logarithm")
    lx = np.log10(x)
    slope, intercept = np.polyfit(lx, np.log10(point), 1)
    valid = (replicates > 0).all(axis=1)
    n_invalid = int((~valid).sum())
    if n_invalid > 0.05 * len(replicates):
        raise ValueError(
            f"{n_invalid} of {len(replicates)} bootstrap replicates have a non-positive gap: "
            "the noisiest point cannot be fitted on a log scale"
        )
    logs = np.log10(replicates[valid]).T
    slopes = np.polyfit(lx, logs, 1)[0]
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    out = {
        "slope": float(slope),
        "intercept": float(intercept),
        "slope_ci95": [float(lo), float(hi)],
        "slope_std": float(slopes.std(ddof=1)),
        "n_points": int(x.size),
        "n_bootstrap": int(len(replicates)),
        "n_invalid": n_invalid,
        "method": "bootstrap over seeds and evaluation pairs",
        "curvature": None,
        "curvature_ci95": [None, None],
    }
    if (
        x.size >= 3
    ):  # is one line a fair summary? the quadratic term of log10 gap in log10 x, same replicates
        out["curvature"] = float(np.polyfit(lx, np.log10(point), 2)[0])
        out["curvature_ci95"] = [
            float(v) for v in np.percentile(np.polyfit(lx, logs, 2)[0], [2.5, 97.5])
        ]
    return out
