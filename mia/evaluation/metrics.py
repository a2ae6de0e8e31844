"""Attack metrics (docs/design.md §5, §6): ROC / AUC / TPR@FPR, the cosine gap, the Gaussian
AUC prediction and the log-log scaling fit.

Plain functions: numpy arrays in, python floats / ints / lists out, so results go straight into
JSON. Higher score = more likely member; labels are 1 for member, 0 for non-member.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

FPR_TARGETS = {"tpr_at_fpr_1e-2": 1e-2, "tpr_at_fpr_1e-3": 1e-3}
_CHUNK = 4_000_000  # max resample elements held in memory at once by the bootstraps


def _check_finite(x: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(f"{name} contain {int(np.isnan(x).sum())} NaN and "
                         f"{int(np.isinf(x).sum())} inf values out of {x.size}")


def _split(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (member scores, non-member scores)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({labels.size}) differ in length")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (non-member) or 1 (member)")
    _check_finite(scores, "scores")
    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need both classes, got {pos.size} members and {neg.size} non-members")
    return pos, neg


def tpr_at_fpr(fpr, tpr, target: float) -> float:
    """Largest TPR among ROC points whose FPR is at most `target`.

    Exact comparison is safe: roc_curve's FPR is k / n0, a correctly rounded division, so
    e.g. 1/100 == 0.01 bit for bit.
    """
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def _resampled_aucs(pos, neg):
    """Return f(pos_idx, neg_idx) -> AUC of each bootstrap resample (index rows), ties count 1/2.

    Instead of re-sorting every resample, sort the non-members once: a member's Mann-Whitney
    count is the number of drawn non-members below it (plus half those tied), read off a
    cumulative sum of per-resample draw counts in sorted order. O(B * n) per call, no sorting.
    """
    n0 = neg.size
    order = np.argsort(neg, kind="stable")
    rank_of = np.empty(n0, dtype=np.int64)
    rank_of[order] = np.arange(n0)
    below = np.searchsorted(neg[order], pos, "left")  # non-members strictly below each member
    not_above = np.searchsorted(neg[order], pos, "right")  # ... below or tied

    def aucs(pos_idx, neg_idx):
        rows = np.arange(len(neg_idx))[:, None]
        flat = (rank_of[neg_idx] + n0 * rows).ravel()
        counts = np.bincount(flat, minlength=len(neg_idx) * n0).reshape(-1, n0)
        cum = np.zeros((len(neg_idx), n0 + 1))
        np.cumsum(counts, axis=1, out=cum[:, 1:])  # cum[r, k]: draws in row r sorted below k
        wins = cum[rows, below[pos_idx]] + cum[rows, not_above[pos_idx]]  # 2 * (less + tie/2)
        return wins.sum(axis=1) / (2.0 * pos_idx.shape[1] * n0)

    return aucs


def _bootstrap(n_bootstrap: int, sizes: tuple[int, int], seed: int, stat):
    """Stratified bootstrap: draw index rows for each class separately, in memory-bounded chunks."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK // sum(sizes))
    out = []
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        out.append(stat(rng.integers(0, sizes[0], (b, sizes[0])),
                        rng.integers(0, sizes[1], (b, sizes[1]))))
    return np.concatenate(out)


def _summary(values: np.ndarray) -> tuple[float | None, list | None]:
    if values.size < 2:
        return None, None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(values.std(ddof=1)), [float(lo), float(hi)]


def roc_metrics(scores, labels, *, n_bootstrap: int = 200, seed: int = 0) -> dict:
    """AUC (with bootstrap std and 95% CI), TPR at 1% and 0.1% FPR, balanced accuracy."""
    pos, neg = _split(scores, labels)
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    s = np.r_[pos, neg]
    # Raw scores, full curve: every threshold counts for the low-FPR figures.
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    auc = float(roc_auc_score(y, s))
    aucs = (_bootstrap(n_bootstrap, (pos.size, neg.size), seed, _resampled_aucs(pos, neg))
            if n_bootstrap else np.empty(0))
    auc_std, auc_ci = _summary(aucs)
    out = {"auc": auc, "auc_std": auc_std, "auc_ci95": auc_ci}
    out.update({k: tpr_at_fpr(fpr, tpr, t) for k, t in FPR_TARGETS.items()})
    out["balanced_accuracy"] = float(np.max(1 - (fpr + 1 - tpr) / 2))
    out["n_members"], out["n_nonmembers"] = int(pos.size), int(neg.size)
    return out


def gap(member_cos, nonmember_cos, *, n_bootstrap: int = 200, seed: int = 0) -> dict:
    """Delta = mean member cosine - mean non-member cosine, with a stratified bootstrap."""
    m = np.asarray(member_cos, dtype=np.float64).ravel()
    n = np.asarray(nonmember_cos, dtype=np.float64).ravel()
    _check_finite(m, "member cosines")
    _check_finite(n, "non-member cosines")
    if m.size < 2 or n.size < 2:
        raise ValueError(f"need >= 2 values per class for a std, got {m.size} and {n.size}")
    diffs = (_bootstrap(n_bootstrap, (m.size, n.size), seed,
                        lambda mi, ni: m[mi].mean(1) - n[ni].mean(1)) if n_bootstrap else np.empty(0))
    std, ci = _summary(diffs)
    return {"value": float(m.mean() - n.mean()), "std": std, "ci95": ci,
            "member_mean": float(m.mean()), "nonmember_mean": float(n.mean()),
            "member_std": float(m.std(ddof=1)), "nonmember_std": float(n.std(ddof=1))}


def gaussian_auc(gap_value: float, member_std: float, nonmember_std: float) -> float:
    """Equal-variance Gaussian prediction AUC = Phi(Delta / (sqrt(2) sigma)), sigma = mean std."""
    sigma = (member_std + nonmember_std) / 2
    if sigma <= 0:  # degenerate: point masses separate perfectly or not at all
        return float(0.5 + 0.5 * np.sign(gap_value))
    return float(stats.norm.cdf(gap_value / (math.sqrt(2) * sigma)))


def roc_table(scores, labels, n_points: int = 50) -> list[dict]:
    """TPR on a log-spaced FPR grid (step definition, so it matches tpr_at_fpr exactly).

    The grid starts at 1e-4, or at 1/n_nonmembers if larger (nothing finer is resolvable).
    """
    pos, neg = _split(scores, labels)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg],
                            drop_intermediate=False)
    # geomspace sets both endpoints exactly, so 1/n0 is not lost to rounding.
    grid = np.geomspace(max(1e-4, 1.0 / neg.size), 1.0, n_points)
    return [{"fpr": float(g), "tpr": tpr_at_fpr(fpr, tpr, g)} for g in grid]


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
    for xi, yi in zip(x, y):
        reason = ("non-finite value" if not (np.isfinite(xi) and np.isfinite(yi))
                  else "non-positive x" if xi <= 0 else "non-positive gap" if yi <= 0 else None)
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
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "slope_ci95": ci,
            "n_points": int(lx.size), "excluded": excluded}


def seed_mean_gaps(jobs, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the seed-mean gap of one condition: [n_bootstrap].

    `jobs` is one (member_cos, nonmember_cos) pair per training seed. Each replicate draws the seeds
    with replacement, and for every drawn seed the member and non-member evaluation pairs with
    replacement (a two-level bootstrap: training runs, then evaluation pairs), and averages the
    drawn seeds' gaps. See seed_mean_gap_table for the coupled form a scaling fit uses.
    """
    return seed_mean_gap_table([jobs], n_bootstrap, seed)[:, 0]


def seed_mean_gap_table(conditions, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Two-level bootstrap of the seed-mean gap of several conditions at once: [n_bootstrap, n_conditions].

    `conditions[c]` is one (member_cos, nonmember_cos) pair per seed. Where every job scored the same
    number of members and of non-members (the i.i.d. splits of a sweep score the same evaluation uids,
    in the same order, at every N and seed), one draw of evaluation pairs per replicate is shared by
    all jobs, so a pair that is easy everywhere moves every point of the curve together, as it would
    in a new experiment; otherwise each job draws its own pairs. Training seeds are drawn per condition.
    """
    rng = np.random.default_rng(seed)
    arrays = [[(np.asarray(m, np.float64), np.asarray(n, np.float64)) for m, n in jobs] for jobs in conditions]
    for jobs in arrays:
        if not jobs:
            raise ValueError("a condition has no jobs")
        for m, n in jobs:
            _check_finite(m, "member cosines")
            _check_finite(n, "non-member cosines")
    shapes = {(m.size, n.size) for jobs in arrays for m, n in jobs}
    out = np.empty((n_bootstrap, len(arrays)))
    for b in range(n_bootstrap):
        shared = None
        if len(shapes) == 1:
            n_m, n_n = next(iter(shapes))
            shared = rng.integers(0, n_m, n_m), rng.integers(0, n_n, n_n)
        for c, jobs in enumerate(arrays):
            gaps = []
            for j in rng.integers(0, len(jobs), len(jobs)):
                m, n = jobs[j]
                mi, ni = shared or (rng.integers(0, m.size, m.size), rng.integers(0, n.size, n.size))
                gaps.append(m[mi].mean() - n[ni].mean())
            out[b, c] = np.mean(gaps)
    return out


def bootstrap_loglog_slope(x, replicates, point) -> dict:
    """Slope of log10 gap on log10 x with a percentile 95% interval from bootstrap replicates.

    `point[i]` is the observed seed-mean gap at x[i], `replicates` [B, len(x)] its bootstrap draws
    (seed_mean_gap_table). The point estimate is the OLS slope through the observed means; each
    replicate is fitted the same way. A replicate with a non-positive gap has no logarithm: it is
    counted in `n_invalid` and left out, and a fit with more than 5% invalid replicates is refused,
    since its interval would describe only the replicates that happened to stay positive. With three
    or more points, `curvature` is the quadratic coefficient of log10 gap in log10 x with its interval
    from the same replicates: an interval away from 0 says the points bend and one slope averages them.
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
        raise ValueError(f"{n_invalid} of {len(replicates)} bootstrap replicates have a non-positive gap: "
                         "the noisiest point cannot be fitted on a log scale")
    logs = np.log10(replicates[valid]).T
    slopes = np.polyfit(lx, logs, 1)[0]
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    out = {"slope": float(slope), "intercept": float(intercept), "slope_ci95": [float(lo), float(hi)],
           "slope_std": float(slopes.std(ddof=1)), "n_points": int(x.size), "n_bootstrap": int(len(replicates)),
           "n_invalid": n_invalid, "method": "bootstrap over seeds and evaluation pairs",
           "curvature": None, "curvature_ci95": [None, None]}
    if x.size >= 3:  # is one line a fair summary? the quadratic term of log10 gap in log10 x, same replicates
        out["curvature"] = float(np.polyfit(lx, np.log10(point), 2)[0])
        out["curvature_ci95"] = [float(v) for v in np.percentile(np.polyfit(lx, logs, 2)[0], [2.5, 97.5])]
    return out
