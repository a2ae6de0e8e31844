"""Dataset inference (docs/design.md §5.1): was a *collection* of m pairs trained on?

A data owner holds m candidate pairs and wants one yes / no answer at a fixed false-positive rate.
One per-sample score of AUC 0.55 is useless alone, but m of them pooled in a rank test against
pairs known not to be trained on add up. This module turns any attack's scores into that test:

- a candidate set is m pairs drawn from `member_eval` (a member set) or from `nonmember_eval`
  (a non-member set, the null);
- its reference is the other non-members: the `nonmember_eval` pairs outside the candidate set,
  cut to the same size for member sets. Attacks score only the two evaluation sets, and several
  train on D_no, so D_no's own scores would be biased; held-out evaluation non-members stand in;
- the test is a one-sided Mann-Whitney U (candidate scores stochastically larger), flagged at
  p <= alpha.

Each draw re-splits the non-members at random. A non-member candidate set is then a uniformly
random m of the n0 non-members against the rest: exactly the exchangeable null the rank test
assumes, so its flag rate is alpha up to the normal approximation of U (conservative for small m)
and the draws' noise. The measured rate is reported beside the power, with its interval.

Pure numpy / scipy on score arrays, so `mia.report` runs it on any sweep's scores.parquet.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from mia.validate import ConfigError, is_int, is_number, require

# Settings left out of analysis.dataset_inference take these (conf/analysis/default.yaml restates
# them).
DEFAULTS = {
    "m": [2, 3, 5, 10, 20, 30, 50, 75, 100, 150, 200, 250],
    "draws": 2000,
    "alpha": 0.01,
    "power": 0.9,
}


def check_settings(settings) -> dict:
    """`analysis.dataset_inference` without `enabled`, filled with DEFAULTS; a bad value is refused,
    naming its key."""
    s = {
        **DEFAULTS,
        **{k: v for k, v in (dict(settings) if settings else {}).items() if k != "enabled"},
    }
    unknown = set(s) - set(DEFAULTS)
    if unknown:
        raise ConfigError(
            "analysis.dataset_inference",
            need=f": unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}",
        )
    m = list(s["m"])
    require(
        m and all(is_int(v) and v >= 1 for v in m) and m == sorted(set(m)),
        "analysis.dataset_inference.m",
        m,
        "must be increasing integers >= 1",
    )
    require(
        is_int(s["draws"]) and s["draws"] >= 10,
        "analysis.dataset_inference.draws",
        s["draws"],
        "must be an integer >= 10",
    )
    for key in ("alpha", "power"):
        require(
            is_number(s[key]) and 0 < s[key] < 1,
            f"analysis.dataset_inference.{key}",
            s[key],
            "must lie strictly between 0 and 1",
        )
    return {
        "m": m,
        "draws": int(s["draws"]),
        "alpha": float(s["alpha"]),
        "power": float(s["power"]),
    }


def rank_test(candidates: np.ndarray, references: np.ndarray) -> np.ndarray:
    """One-sided Mann-Whitney U p-values, row by row: is each candidate row stochastically larger
    than its reference row? Normal approximation with tie and continuity corrections."""
    return stats.mannwhitneyu(
        candidates,
        references,
        alternative="greater",
        axis=1,
        method="asymptotic",
        use_continuity=True,
    ).pvalue


def _draw_sets(rng, pool: int, draws: int, m: int) -> np.ndarray:
    """`draws` random splits of range(pool), one per row: a row's first m are its candidate set (the
    m smallest of a row of uniforms), the rest the others. The rank test ignores order within either
    part, so a partition serves where a full sort would cost far more at large pools."""
    return np.argpartition(rng.random((draws, pool)), m - 1, axis=1)


def _p_greater(u, n1: int, n2: int, tie_term) -> np.ndarray:
    """scipy.stats.mannwhitneyu's one-sided ("greater") asymptotic p-value with continuity
    correction, from U1 and the tie term sum(t^3 - t) of the pooled sample: the same operations, so
    the same bits."""
    mu = n1 * n2 / 2
    n = n1 + n2
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    numerator = np.asarray(u, np.float64) - mu
    numerator -= 0.5
    return np.clip(special.ndtr(-(numerator / s)), 0.0, 1.0)


def _tie_term(x) -> float:
    t = np.unique(x, return_counts=True)[1].astype(np.float64)
    return float(np.sum(t**3 - t))


def _null_pvalues(non, order, m) -> np.ndarray:
    """rank_test of each row's first m non-members against the rest of them: the pooled sample is
    every non-member, so its ranks and ties are computed once and U1 is a sum of precomputed
    ranks."""
    ranks = stats.rankdata(non)
    u = ranks[order[:, :m]].sum(axis=1) - m * (m + 1) / 2
    return _p_greater(u, m, non.size - m, _tie_term(non))


def _member_pvalues(member, non, cand, excluded, chunk: int = 256) -> np.ndarray:
    """rank_test of each row's members `cand` against every non-member but the row's `excluded`
    ones. U1 counts the pairs a member wins, a tie as a half: the wins over all non-members (two
    sorted searches) minus those over the excluded few. The pooled sample's tie term is the
    non-members' own, corrected for the values a row adds (its members) and removes (its excluded
    non-members). Every count is an integer or a half, so each sum is exact in any order, and the
    p-values are scipy's bit for bit (tests/evaluation/test_dataset_inference.py), ties or none."""
    ordered = np.sort(non)
    below = np.searchsorted(ordered, member, "left")
    wins = below + (np.searchsorted(ordered, member, "right") - below) / 2
    u = wins[cand].sum(axis=1)
    counts = np.unique(non, return_counts=True)[1].astype(np.float64)
    tie = np.full(len(cand), float(np.sum(counts**3 - counts)))
    for start in range(
        0, len(cand), chunk
    ):  # bounded memory: rows x m x (m + excluded) comparisons per chunk
        rows = slice(start, start + chunk)
        c, e = member[cand[rows]], non[excluded[rows]]
        u[rows] -= (c[:, :, None] > e[:, None, :]).sum(axis=(1, 2)) + (
            c[:, :, None] == e[:, None, :]
        ).sum(axis=(1, 2)) / 2
        # each value the row touches, once: its count among all non-members, then in the pooled
        # sample
        v = np.sort(np.concatenate([c, e], axis=1), axis=1)
        first = np.ones(v.shape, bool)
        first[:, 1:] = v[:, 1:] != v[:, :-1]
        old = (np.searchsorted(ordered, v, "right") - np.searchsorted(ordered, v, "left")).astype(
            np.float64
        )
        new = (
            old
            + (v[:, :, None] == c[:, None, :]).sum(axis=2)
            - (v[:, :, None] == e[:, None, :]).sum(axis=2)
        )
        tie[rows] += np.where(first, (new**3 - new) - (old**3 - old), 0.0).sum(axis=1)
    m = cand.shape[1]
    return _p_greater(u, m, non.size - excluded.shape[1], tie)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> list[float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return [lo, hi]


def predicted_m(
    auc: float, alpha: float, power: float, n_reference: float = math.inf
) -> float | None:
    """The m at which the rank test reaches `power` at `alpha` for a per-pair AUC, by Noether's
    normal approximation (U's null variance for both hypotheses): var(U / mn) = (m + n + 1) / (12 m
    n). With unlimited known non-members (n -> inf) this is ((z_alpha + z_power) / (AUC - 1/2))^2 /
    12. None where no m suffices (AUC <= 1/2, or a reference too small for that AUC)."""
    if auc <= 0.5:
        return None
    k = ((auc - 0.5) / (stats.norm.isf(alpha) + stats.norm.ppf(power))) ** 2
    if math.isinf(n_reference):
        return float(1 / (12 * k))
    denominator = 12 * n_reference * k - 1
    return float((n_reference + 1) / denominator) if denominator > 0 else None


def dataset_inference(member_scores, nonmember_scores, settings=None, seed: int = 0) -> dict:
    """Power and false-positive rate of the set-level test at every m of the grid
    (docs/design.md §5.1).

    Returns {"alpha", "power_target", "draws", "n_members", "n_nonmembers", "auc", "by_m": [{"m",
    "reference", "power", "fpr", "fpr_ci95"}], "smallest_m", "max_m", "fpr", "fpr_ci95", "fpr_max",
    "m_above_alpha", "calibrated", "predicted_m"}. `smallest_m` is the first m whose power reaches
    the target (None if no m of the grid does); `fpr` is the non-member sets' flag rate pooled over
    the grid, and `calibrated` says it is at most alpha with no single m significantly above alpha
    (one-sided, Bonferroni over the grid). Grid values above the members or above half the
    non-members (the reference would be smaller than the candidate set) are left out."""
    s = check_settings(settings)
    member = np.asarray(member_scores, dtype=np.float64).ravel()
    non = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    for name, x in (("member scores", member), ("non-member scores", non)):
        if not np.isfinite(x).all() or x.size < 2:
            raise ValueError(
                f"dataset inference needs at least 2 finite {name}, got {x.size} "
                f"({int((~np.isfinite(x)).sum())} not finite)"
            )
    n1, n0 = member.size, non.size
    rng = np.random.default_rng(seed)
    by_m = []
    for m in (v for v in s["m"] if v <= n1 and v <= n0 // 2):
        ref = n0 - m
        # null: m non-members against the other n0 - m, the split drawn afresh each time
        order = _draw_sets(rng, n0, s["draws"], m)
        p_null = _null_pvalues(non, order, m)
        # members: m members against n0 - m non-members, both drawn afresh each time
        cand = _draw_sets(rng, n1, s["draws"], m)[:, :m]
        refs = _draw_sets(rng, n0, s["draws"], ref)
        p_member = _member_pvalues(member, non, cand, refs[:, ref:])
        flagged = int((p_null <= s["alpha"]).sum())
        by_m.append(
            {
                "m": m,
                "reference": ref,
                "power": float((p_member <= s["alpha"]).mean()),
                "fpr": flagged / s["draws"],
                "fpr_ci95": clopper_pearson(flagged, s["draws"]),
            }
        )
    if not by_m:
        raise ConfigError(
            "analysis.dataset_inference.m",
            need=f"={s['m']}: no m fits {n1} members and {n0} "
            "non-members (m must be at most the members and half the non-members)",
        )
    reached = [r["m"] for r in by_m if r["power"] >= s["power"]]
    auc = float(stats.mannwhitneyu(member, non).statistic / (n1 * n0))
    # One m's rate moves by about +-0.45% (95%) over 2000 draws at alpha = 1%, so the grid's largest
    # rate exceeds alpha by chance alone; the check is the rate pooled over the grid, and no single
    # m significantly above alpha once the grid's many m are accounted for (Bonferroni).
    flagged = sum(round(r["fpr"] * s["draws"]) for r in by_m)
    total = s["draws"] * len(by_m)
    fpr = flagged / total
    level = 1 - 0.05 / len(by_m)
    above = [
        r["m"]
        for r in by_m
        if clopper_pearson(round(r["fpr"] * s["draws"]), s["draws"], level)[0] > s["alpha"]
    ]
    return {
        "alpha": s["alpha"],
        "power_target": s["power"],
        "draws": s["draws"],
        "n_members": n1,
        "n_nonmembers": n0,
        "auc": auc,
        "by_m": by_m,
        "smallest_m": reached[0] if reached else None,
        "max_m": by_m[-1]["m"],
        "fpr": fpr,
        "fpr_ci95": clopper_pearson(flagged, total),
        "fpr_max": max(r["fpr"] for r in by_m),
        "m_above_alpha": above,
        "calibrated": fpr <= s["alpha"] and not above,
        "predicted_m": predicted_m(auc, s["alpha"], s["power"]),
    }
