"""Attack metrics (docs/design.md §5, §6): ROC / AUC / TPR@FPR with stratified bootstrap intervals,
the paired comparison of two attacks on the same pairs (bootstrap and DeLong), thresholds calibrated
on known non-members, the gap (in cosine, in contrastive loss, and as d') and the Gaussian AUC
prediction. The scaling fits across jobs are the sweep report's (mia/report/fits.py).

Plain functions: numpy arrays in, python floats / ints / lists out, so results go straight into
JSON. Higher score = more likely member; labels are 1 for member, 0 for non-member.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats
from sklearn.metrics import roc_auc_score, roc_curve

FPR_TARGETS = {"tpr_at_fpr_1e-2": 1e-2, "tpr_at_fpr_1e-3": 1e-3}
# A TPR at FPR f rests on K_nonmembers * f false positives; below this many it is not resolved.
MIN_FALSE_POSITIVES = 10
_CHUNK = 4_000_000  # max resample elements held in memory at once by the bootstraps


def check_finite(x: np.ndarray, name: str) -> None:
    """Refuse NaN and inf, counting each (the report's seed bootstrap checks cosines with it
    too)."""
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(
            f"{name} contain {int(np.isnan(x).sum())} NaN and "
            f"{int(np.isinf(x).sum())} inf values out of {x.size}"
        )


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


def _crossing(fpr, tpr, target: float):
    """(i, straddles): i is the last ROC point with FPR at most `target` (the highest TPR there,
    the curve being monotone); `straddles` says whether the next point lies beyond the target with
    a higher TPR, i.e. the target falls inside a block of tied scores that holds members and
    non-members (between untied points the curve only rises at constant FPR or runs flat)."""
    i = int(np.flatnonzero(fpr <= target)[-1])
    return i, bool(i + 1 < fpr.size and fpr[i] < target and tpr[i + 1] > tpr[i])


def _along(fa, fb, ta, tb, target):
    """TPR at FPR `target` on the segment (fa, ta) - (fb, tb); one formula for tpr_at_fpr and the
    bootstrap (_resampled_tprs), so that the two agree bit for bit."""
    return ta + (target - fa) / (fb - fa) * (tb - ta)


def tpr_at_fpr(fpr, tpr, target: float) -> float:
    """TPR of the ROC curve (roc_curve, every threshold kept) at FPR `target`, with a block of tied
    scores drawn as the straight segment across it: the largest TPR among points whose FPR is at
    most `target`, plus, where a tied block straddles the target (_crossing), the share of the
    block's members a threshold inside it gets on average when the tie is broken at random, by
    linear interpolation along the segment. Without such a tie, the step value alone.

    Exact comparison is safe: roc_curve's FPR is k / n0, a correctly rounded division, so
    e.g. 1/100 == 0.01 bit for bit. roc_curve always starts at (0, 0).
    """
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    i, straddles = _crossing(fpr, tpr, target)
    if not straddles:
        return float(tpr[i])
    return float(_along(fpr[i], fpr[i + 1], tpr[i], tpr[i + 1], target))


def tpr_tied(fpr, tpr, target: float) -> bool:
    """Whether the TPR at `target` was read inside a block of tied scores (interpolated)."""
    return _crossing(np.asarray(fpr), np.asarray(tpr), target)[1]


def top_tie_share(scores) -> float:
    """The share of the scored pairs (members and non-members) tied at the highest score: 1 / n
    for untied scores. A large block at the top holds the low-FPR figures: a threshold either
    calls all of it members or none."""
    scores = np.asarray(scores, np.float64)
    return float(np.count_nonzero(scores == scores.max()) / scores.size)


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
        out.append(
            stat(rng.integers(0, sizes[0], (b, sizes[0])), rng.integers(0, sizes[1], (b, sizes[1])))
        )
    return np.concatenate(out)


def _summary(values: np.ndarray) -> tuple[float | None, list | None]:
    if values.size < 2:
        return None, None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(values.std(ddof=1)), [float(lo), float(hi)]


def low_fpr_resolved(n_nonmembers: int, fpr: float) -> bool:
    """Whether n_nonmembers resolve a TPR at `fpr`: at least MIN_FALSE_POSITIVES false positives
    allowed."""
    return (
        n_nonmembers * fpr >= MIN_FALSE_POSITIVES - 1e-9
    )  # 1e-9: 1000 * 0.01 is 10 up to rounding


def _allowed_false_positives(n0: int, target: float) -> int:
    """The largest k with k / n0 <= target, compared exactly as tpr_at_fpr compares FPRs."""
    k = int(math.floor(target * n0))
    while (k + 1) / n0 <= target:
        k += 1
    while k > 0 and k / n0 > target:
        k -= 1
    return k


def _resampled_tprs(pos, neg, target: float):
    """Return f(pos_idx, neg_idx) -> TPR at FPR `target` of each resample, equal to tpr_at_fpr on
    it.

    With k false positives allowed, the target falls in the block of non-members tied at v, the
    (k+1)-th largest non-member score: a of them lie strictly above v, c at v. The ROC runs from
    (a / n0, share of members above v) to ((a + c) / n0, share at or above v), and tpr_at_fpr
    interpolates along it (1 when k >= n0). Without members at v that is the share above v.
    """
    n0 = neg.size
    k = _allowed_false_positives(n0, target)

    def tprs(pos_idx, neg_idx):
        if k >= n0:
            return np.ones(len(pos_idx))
        drawn = neg[neg_idx]
        v = np.partition(drawn, n0 - 1 - k, axis=1)[:, n0 - 1 - k, None]
        a, c = (drawn > v).sum(1), (drawn == v).sum(1)
        p = pos[pos_idx]
        n1 = p.shape[1]
        above, tied = (p > v).sum(1), (p == v).sum(1)
        return _along(a / n0, (a + c) / n0, above / n1, (above + tied) / n1, target)

    return tprs


def resampled_metrics(pos, neg):
    """f(pos_idx, neg_idx) -> [resamples, 1 + len(FPR_TARGETS)]: the AUC and each TPR@FPR of each
    resample."""
    fns = [_resampled_aucs(pos, neg)] + [_resampled_tprs(pos, neg, t) for t in FPR_TARGETS.values()]
    return lambda pi, ni: np.stack([f(pi, ni) for f in fns], axis=1)


def roc_metrics(scores, labels, *, n_bootstrap: int = 200, seed: int = 0) -> dict:
    """AUC (with bootstrap std and 95% CI), TPR at 1% and 0.1% FPR (with 95% CIs from the same
    resamples, whether the non-members resolve them and whether a tie straddles them), the
    top-tie share, and the oracle balanced accuracy."""
    pos, neg = _split(scores, labels)
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    s = np.r_[pos, neg]
    # Raw scores, full curve: every threshold counts for the low-FPR figures.
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    auc = float(roc_auc_score(y, s))
    boot = (
        _bootstrap(n_bootstrap, (pos.size, neg.size), seed, resampled_metrics(pos, neg))
        if n_bootstrap
        else np.empty((0, 1 + len(FPR_TARGETS)))
    )
    auc_std, auc_ci = _summary(boot[:, 0])
    out = {"auc": auc, "auc_std": auc_std, "auc_ci95": auc_ci}
    for j, (k, t) in enumerate(FPR_TARGETS.items(), start=1):
        out[k] = tpr_at_fpr(fpr, tpr, t)
        out[f"{k}_ci95"] = _summary(boot[:, j])[1]
    out["low_fpr_resolved"] = {
        k.rsplit("_", 1)[1]: low_fpr_resolved(neg.size, t) for k, t in FPR_TARGETS.items()
    }
    out["tpr_tied"] = {k.rsplit("_", 1)[1]: tpr_tied(fpr, tpr, t) for k, t in FPR_TARGETS.items()}
    out["top_tie_share"] = top_tie_share(s)
    # The best threshold chosen on the evaluation labels themselves: an oracle, no attacker's
    # decision.
    out["oracle_balanced_accuracy"] = float(np.max(1 - (fpr + 1 - tpr) / 2))
    out["n_members"], out["n_nonmembers"] = int(pos.size), int(neg.size)
    return out


def bootstrap_p_value(deltas: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of "no difference": twice the smaller share of replicates on
    either side of 0 (ties at 0 count for both sides), with the +1 correction, at most 1."""
    if deltas.size == 0:
        return None
    b = deltas.size
    below, above = (deltas <= 0).sum(), (deltas >= 0).sum()
    return float(min(1.0, 2 * (1 + min(below, above)) / (b + 1)))


def paired_comparison(a, b, *, n_bootstrap: int = 200, seed: int = 0) -> dict:
    """Attack A against attack B on the same evaluation pairs: a = (A's member scores, A's
    non-member scores), b likewise, in the same pair order. Differences are A - B.

    Paired bootstrap: each replicate draws member and non-member indices once (stratified, with
    _bootstrap's seed, so the very resamples of roc_metrics) and applies them to both attacks.
    Returns delta_auc, delta_auc_ci95, delta_tpr_at_fpr_1e-2 and its ci95, p_value (two-sided,
    bootstrap, of Delta AUC) and delong_p_value (DeLong's test of Delta AUC, delong below).
    """
    (a_pos, a_neg), (b_pos, b_neg) = (_split(*labelled(*a)), _split(*labelled(*b)))
    if (a_pos.size, a_neg.size) != (b_pos.size, b_neg.size):
        raise ValueError(
            f"paired comparison needs the same pairs: {a_pos.size}+{a_neg.size} against "
            f"{b_pos.size}+{b_neg.size} scores"
        )
    fa, fb = resampled_metrics(a_pos, a_neg), resampled_metrics(b_pos, b_neg)
    deltas = (
        _bootstrap(
            n_bootstrap, (a_pos.size, a_neg.size), seed, lambda pi, ni: fa(pi, ni) - fb(pi, ni)
        )
        if n_bootstrap
        else np.empty((0, 1 + len(FPR_TARGETS)))
    )
    ma = roc_metrics(*labelled(a_pos, a_neg), n_bootstrap=0)
    mb = roc_metrics(*labelled(b_pos, b_neg), n_bootstrap=0)
    return {
        "delta_auc": ma["auc"] - mb["auc"],
        "delta_auc_ci95": _summary(deltas[:, 0])[1],
        "delta_tpr_at_fpr_1e-2": ma["tpr_at_fpr_1e-2"] - mb["tpr_at_fpr_1e-2"],
        "delta_tpr_at_fpr_1e-2_ci95": _summary(deltas[:, 1])[1],
        "p_value": bootstrap_p_value(deltas[:, 0]),
        "delong_p_value": delong(a, b)["p_value"],
        "n_bootstrap": int(n_bootstrap),
    }


def labelled(member, nonmember):
    """(scores, labels) of two scored sets, members first: labels 1 for a member, 0 for a
    non-member."""
    member, nonmember = (
        np.asarray(member, np.float64).ravel(),
        np.asarray(nonmember, np.float64).ravel(),
    )
    return np.r_[member, nonmember], np.r_[np.ones(member.size), np.zeros(nonmember.size)]


def _structural_components(pos, neg):
    """DeLong's placements by midranks (Sun & Xu 2014): V10[i] = share of non-members below member i
    (ties 1/2), V01[j] = share of members above non-member j (ties 1/2); their means are the AUC."""
    n1, n0 = pos.size, neg.size
    both = stats.rankdata(np.r_[pos, neg])
    v10 = (both[:n1] - stats.rankdata(pos)) / n0
    v01 = 1.0 - (both[n1:] - stats.rankdata(neg)) / n1
    return v10, v01


def delong(a, b) -> dict:
    """DeLong's test (DeLong, DeLong & Clarke-Pearson 1988) of AUC(A) = AUC(B) for two attacks
    scored on the same pairs, by the fast midrank algorithm of Sun & Xu (2014).

    a, b: (member scores, non-member scores) in the same pair order. Each AUC is the mean of its
    members' placements V10 and of its non-members' placements V01; the variance of Delta AUC is
    var(V10_A - V10_B) / n1 + var(V01_A - V01_B) / n0 (sample variances, ddof 1), and
    z = Delta / sd gives a two-sided normal p-value. Identical placements give var 0: p = 1.
    """
    (a_pos, a_neg), (b_pos, b_neg) = _split(*labelled(*a)), _split(*labelled(*b))
    if (a_pos.size, a_neg.size) != (b_pos.size, b_neg.size) or min(a_pos.size, a_neg.size) < 2:
        raise ValueError(
            "DeLong's test needs the same pairs for both attacks, at least 2 per class"
        )
    a10, a01 = _structural_components(a_pos, a_neg)
    b10, b01 = _structural_components(b_pos, b_neg)
    delta = float(a10.mean() - b10.mean())
    var = float(np.var(a10 - b10, ddof=1) / a_pos.size + np.var(a01 - b01, ddof=1) / a_neg.size)
    if var <= 0:
        return {
            "auc_a": float(a10.mean()),
            "auc_b": float(b10.mean()),
            "delta": delta,
            "var": 0.0,
            "z": None,
            "p_value": 1.0 if delta == 0 else 0.0,
        }
    z = delta / math.sqrt(var)
    return {
        "auc_a": float(a10.mean()),
        "auc_b": float(b10.mean()),
        "delta": delta,
        "var": var,
        "z": float(z),
        "p_value": float(2 * stats.norm.sf(abs(z))),
    }


def calibrated_thresholds(
    known_scores, member_scores, nonmember_scores, targets=(1e-2, 1e-3)
) -> list[dict]:
    """Thresholds an auditor can set without the evaluation labels: for each FPR target f, the (1 -
    f) quantile of the attack's scores on known non-members (D_no; numpy's linear interpolation),
    and a pair called a member when its score is strictly above it. Each entry holds the target, the
    threshold, how many known non-members set it and whether they resolve f (low_fpr_resolved),
    whether it sits on a block of tied D_no scores (`tied`), on the evaluation sets the realised
    FPR and the TPR with Clopper-Pearson 95% intervals (given the threshold), `expected_fpr95`:
    where the realised FPR falls 95% of the time when D_no and the evaluation non-members are
    exchangeable (exchangeable_fpr_interval), and `calibrated`: whether it falls there (False: the
    threshold set on D_no does not give the evaluation non-members the FPR it was set for). The
    Clopper-Pearson interval alone would treat the threshold as fixed, though it is itself an
    estimate from n_known pairs: with 1,000 of them and 5,000 non-members it misses f in about 40%
    of exchangeable draws."""
    known = np.asarray(known_scores, np.float64).ravel()
    member = np.asarray(member_scores, np.float64).ravel()
    nonmember = np.asarray(nonmember_scores, np.float64).ravel()
    for x, name in (
        (known, "known non-member scores"),
        (member, "member scores"),
        (nonmember, "non-member scores"),
    ):
        check_finite(x, name)
        if x.size == 0:
            raise ValueError(f"no {name}")
    out = []
    for f in targets:
        threshold = float(np.quantile(known, 1 - f))
        fp, tp = int((nonmember > threshold).sum()), int((member > threshold).sum())
        # a block of tied D_no scores at the threshold: "strictly above" leaves all of it out
        tied = bool(np.count_nonzero(known == threshold) > 1)
        expected = exchangeable_fpr_interval(
            int((known > threshold).sum()), known.size, nonmember.size
        )
        out.append(
            {
                "fpr_target": f,
                "threshold": threshold,
                "n_known": int(known.size),
                "resolved": low_fpr_resolved(known.size, f),
                "tied": tied,
                "realised_fpr": fp / nonmember.size,
                "realised_fpr_ci95": _clopper_pearson(fp, nonmember.size),
                "expected_fpr95": expected,
                "calibrated": bool(expected[0] <= fp / nonmember.size <= expected[1]),
                "tpr": tp / member.size,
                "tpr_ci95": _clopper_pearson(tp, member.size),
            }
        )
    return out


def exchangeable_fpr_interval(above: int, n_known: int, n_eval: int) -> list[float]:
    """The central 95% range of the share of n_eval non-members strictly above a threshold that
    `above` of n_known known non-members lie strictly above, when the two sets are exchangeable
    draws of one continuous score: both samples vary. The threshold lies between the known scores
    ranked `above` and `above` + 1 from the top; the share of the score distribution beyond the one
    ranked k is Beta(k, n_known - k + 1), so the count beyond it is beta-binomial. The range runs
    from the lower end for rank `above` (0 where it is 0) to the upper end for rank `above` + 1."""
    lo = stats.betabinom.ppf(0.025, n_eval, above, n_known - above + 1) if above else 0.0
    hi = stats.betabinom.ppf(0.975, n_eval, above + 1, n_known - above)
    return [float(lo) / n_eval, float(hi) / n_eval]


def _clopper_pearson(k: int, n: int) -> list[float]:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def _two_classes(member, nonmember, what: str) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(member, dtype=np.float64).ravel()
    n = np.asarray(nonmember, dtype=np.float64).ravel()
    check_finite(m, f"member {what}")
    check_finite(n, f"non-member {what}")
    if m.size < 2 or n.size < 2:
        raise ValueError(f"need >= 2 values per class for a std, got {m.size} and {n.size}")
    return m, n


def gap(
    member_cos, nonmember_cos, *, n_bootstrap: int = 200, seed: int = 0, what: str = "cosines"
) -> dict:
    """Delta = mean member cosine - mean non-member cosine (or of any per-pair `what`), with a
    stratified bootstrap."""
    m, n = _two_classes(member_cos, nonmember_cos, what)
    diffs = (
        _bootstrap(
            n_bootstrap, (m.size, n.size), seed, lambda mi, ni: m[mi].mean(1) - n[ni].mean(1)
        )
        if n_bootstrap
        else np.empty(0)
    )
    std, ci = _summary(diffs)
    return {
        "value": float(m.mean() - n.mean()),
        "std": std,
        "ci95": ci,
        "member_mean": float(m.mean()),
        "nonmember_mean": float(n.mean()),
        "member_std": float(m.std(ddof=1)),
        "nonmember_std": float(n.std(ddof=1)),
    }


def pair_losses(image, text, bank_image, bank_text, logit_scale: float) -> np.ndarray:
    """Each pair's contrastive loss against a bank of other pairs, in float64: the mean of its
    image-to-text and text-to-image InfoNCE losses, each over the pair itself and the bank's
    captions (images), at the model's logit scale (the exp of its learned temperature)."""
    img, txt = (np.asarray(x, dtype=np.float64) for x in (image, text))
    bank_img, bank_txt = (np.asarray(x, dtype=np.float64) for x in (bank_image, bank_text))
    s = float(logit_scale)
    pos = s * (img * txt).sum(1)
    i2t = np.concatenate([pos[:, None], s * img @ bank_txt.T], axis=1)
    t2i = np.concatenate([pos[:, None], s * txt @ bank_img.T], axis=1)
    return 0.5 * (special.logsumexp(i2t, axis=1) + special.logsumexp(t2i, axis=1)) - pos


def loss_gap(member, nonmember, bank, logit_scale: float, *, n_bootstrap=200, seed=0) -> dict:
    """Mean member loss - mean non-member loss (pair_losses against one bank of known non-members;
    `member`, `nonmember`, `bank`: (image, text) embeddings), with the cosine gap's bootstrap.
    Negative where the members are fitted better."""
    out = gap(
        pair_losses(*member, *bank, logit_scale),
        pair_losses(*nonmember, *bank, logit_scale),
        n_bootstrap=n_bootstrap,
        seed=seed,
        what="losses",
    )
    return {**out, "bank": len(bank[0]), "logit_scale": float(logit_scale)}


def d_prime(member_cos, nonmember_cos, *, n_bootstrap: int = 200, seed: int = 0) -> dict:
    """The separability of the member and non-member cosines, (mean_m - mean_n) /
    sqrt((var_m + var_n) / 2), with a stratified bootstrap over pairs as the gap's."""
    m, n = _two_classes(member_cos, nonmember_cos, "cosines")

    def stat(mi, ni):
        a, b = m[mi], n[ni]
        pooled = np.sqrt((a.var(1, ddof=1) + b.var(1, ddof=1)) / 2)
        return (a.mean(1) - b.mean(1)) / pooled

    values = _bootstrap(n_bootstrap, (m.size, n.size), seed, stat) if n_bootstrap else np.empty(0)
    std, ci = _summary(values)
    value = (m.mean() - n.mean()) / np.sqrt((m.var(ddof=1) + n.var(ddof=1)) / 2)
    return {"value": float(value), "std": std, "ci95": ci}


def gaussian_auc(gap_value: float, member_std: float, nonmember_std: float) -> float:
    """Equal-variance Gaussian prediction AUC = Phi(Delta / (sqrt(2) sigma)), sigma = mean std."""
    sigma = (member_std + nonmember_std) / 2
    if sigma <= 0:  # degenerate: point masses separate perfectly or not at all
        return float(0.5 + 0.5 * np.sign(gap_value))
    return float(stats.norm.cdf(gap_value / (math.sqrt(2) * sigma)))


def roc_table(scores, labels, n_points: int = 50) -> list[dict]:
    """TPR on a log-spaced FPR grid (tpr_at_fpr at each grid point).

    The grid starts at 1e-4, or at 1/n_nonmembers if larger (nothing finer is resolvable).
    """
    pos, neg = _split(scores, labels)
    fpr, tpr, _ = roc_curve(
        np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg], drop_intermediate=False
    )
    # geomspace sets both endpoints exactly, so 1/n0 is not lost to rounding.
    grid = np.geomspace(max(1e-4, 1.0 / neg.size), 1.0, n_points)
    return [{"fpr": float(g), "tpr": tpr_at_fpr(fpr, tpr, g)} for g in grid]
