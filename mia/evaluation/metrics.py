"""Attack metrics (docs/design.md §5, §6): ROC / AUC / TPR@FPR, the cosine gap and the Gaussian
AUC prediction. The scaling fits across jobs are the sweep report's (mia/report/fits.py).

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


def check_finite(x: np.ndarray, name: str) -> None:
    """Refuse NaN and inf, counting each (the report's seed bootstrap checks cosines with it too)."""
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
    check_finite(scores, "scores")
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
    check_finite(m, "member cosines")
    check_finite(n, "non-member cosines")
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
