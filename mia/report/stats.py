"""The sweep report's points: one per condition, its training seeds pooled into a mean and a band of
+-1 seed sd, with a two-level bootstrap (seeds, then evaluation pairs) of the seed-mean gap, and
each attack's seed-mean AUC difference from the reference attack, CSA by default, with a t interval
over the seeds' paired differences (seed_interval; one seed: that job's paired interval over its
pairs); Holm's adjustment of a family of p-values; and the series the figures and tables draw
(points against N or T, rows against data.shift)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import stats

from mia.evaluation import metrics
from mia.report.rows import attack_scores, attacks_of, cosines, reference, reference_scores

# a point: one condition, any seeds (defense and weight decay split the arms of
# experiment=privacy_utility, the starting weights those of experiment=finetune)
IDENTITY = ("nonmembers", "epochs", "size", "model", "params", "defense", "weight_decay", "init")
# the measures of the member / non-member difference a point carries: the cosine gap, the loss gap
# (mean member minus mean non-member contrastive loss) and d' (docs/design.md §6.7)
MEASURES = ("gap", "loss_gap", "d_prime")


def steps(epochs: int | None, size: int | None, config: dict) -> int | None:
    """A target's optimiser steps, T * ceil(N / train.batch_size) (one process); None where T, N or
    the batch size is not known."""
    batch = config.get("train", {}).get("batch_size")
    if None in (epochs, size, batch):
        return None
    return int(epochs) * -(-int(size) // int(batch))


def _spread(name, values) -> dict:
    """Mean over seeds and the seeds' standard deviation (None with one seed)."""
    values = np.asarray([v for v in values if v is not None], float)
    if not values.size:
        return {}
    return {
        f"{name}_mean": float(values.mean()),
        f"{name}_seed_std": float(values.std(ddof=1)) if values.size > 1 else None,
    }


def points(rows, n_bootstrap: int, seed: int = 0) -> list[dict]:
    """One point per condition (non-members, T, N, model): mean and spread over its training seeds,
    and a 95% interval of the seed-mean gap from a bootstrap over seeds and evaluation pairs; where
    a job's scores.parquet failed the check, or with n_bootstrap=0, the job's own interval with one
    seed."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in IDENTITY)].append(r)
    out, ref = [], reference(rows)
    for key, rs in groups.items():
        p = dict(
            zip(IDENTITY, key, strict=True),
            n_seeds=len(rs),
            seeds=sorted(r["seed"] for r in rs),
            _rows=rs,
        )
        # a target from a checkpoint did not train on this job's recipe: its steps are unknown
        trained = all(r["_trained"] for r in rs)
        p["steps"] = steps(p["epochs"], p["size"], rs[0]["_config"]) if trained else None
        p.update(_spread("gap", [r["gap_value"] for r in rs]))
        # each measure of the gap with its t interval over the seeds (docs/design.md §6.7); a
        # measure some seed lacks (a job recorded before it) stays empty
        for name in MEASURES:
            values = [r.get(f"{name}_value") for r in rs]
            known = None not in values
            if name != "gap":
                p[f"{name}_mean"] = float(np.mean(values)) if known else None
                p[f"{name}_seed_std"] = (
                    float(np.std(values, ddof=1)) if known and len(values) > 1 else None
                )
            over_seeds = seed_interval(values) if known else None
            p[f"{name}_seed_ci"] = [None, None] if over_seeds is None else over_seeds["ci"]
        for side in ("member", "nonmember"):  # the gap's two sides: which one moves with N (§6.5)
            p.update(_spread(f"{side}_cos", [r[f"gap_{side}_mean"] for r in rs]))
        p["gaussian_auc"] = float(np.mean([r["gap_gaussian_auc"] for r in rs]))
        cos = [cosines(r) for r in rs]
        p["_cos"] = None if any(c is None for c in cos) else cos
        if p["_cos"] is not None and n_bootstrap:
            lo, hi = np.percentile(seed_mean_gaps(p["_cos"], n_bootstrap, seed), [2.5, 97.5])
            p["gap_ci"] = [float(lo), float(hi)]
        else:
            p["gap_ci"] = [rs[0]["gap_ci_lo"], rs[0]["gap_ci_hi"]] if len(rs) == 1 else [None, None]
        for name in attacks_of(rs):
            for metric in ("auc", "tpr_at_fpr_1e-2"):
                p.update(_spread(f"{name}/{metric}", [r.get(f"{name}/{metric}") for r in rs]))
            boot = [r.get(f"{name}/auc_std") for r in rs if r.get(f"{name}/auc_std") is not None]
            p[f"{name}/auc_boot_std"] = float(np.mean(boot)) if boot else None
            for k in (
                "tpr_at_fpr_1e-2",
                "tpr_at_fpr_1e-3",
            ):  # resolved only where every seed's non-members do
                p[f"{name}/{k}_resolved"] = all(r.get(f"{name}/{k}_resolved", True) for r in rs)
            if name != ref:
                p.update(_vs_csa(rs, name, n_bootstrap, seed))
        out.append(p)
    return sorted(
        out, key=lambda p: (p["nonmembers"], p["epochs"], str(p["model"]), p["params"], p["size"])
    )


def _vs_csa(rs, name, n_bootstrap, seed) -> dict:
    """A point's seed-mean AUC difference from the reference, its 95% interval and two-sided p, and
    what varied in them (`_interval`): "seeds", a t interval and t test over the seeds' paired
    differences (seed_interval); "pairs" with one seed, a paired bootstrap over that job's pairs
    (seed_mean_delta_aucs; without its scores, the job's own interval) and its DeLong p, which speak
    for that one target only; None without either."""
    deltas = [r.get(f"{name}/delta_auc_vs_csa") for r in rs]
    if any(d is None for d in deltas):  # a job that did not run the attack
        return {}
    out = {
        f"{name}/delta_auc_vs_csa_mean": float(np.mean(deltas)),
        f"{name}/delta_auc_vs_csa_ci": [None, None],
        f"{name}/delta_auc_vs_csa_p": None,
        f"{name}/delta_auc_vs_csa_interval": None,
    }
    over_seeds = seed_interval(deltas)
    if over_seeds is not None:
        out[f"{name}/delta_auc_vs_csa_ci"] = over_seeds["ci"]
        out[f"{name}/delta_auc_vs_csa_p"] = over_seeds["p"]
        out[f"{name}/delta_auc_vs_csa_interval"] = "seeds"
    elif rs[0].get(f"{name}/delta_auc_vs_csa_ci_lo") is not None:
        job = attack_scores(rs[0], name), reference_scores(rs[0])
        if n_bootstrap and None not in job:
            lo, hi = np.percentile(seed_mean_delta_aucs([job], n_bootstrap, seed), [2.5, 97.5])
            ci = [float(lo), float(hi)]
        else:
            ci = [rs[0][f"{name}/delta_auc_vs_csa_ci_lo"], rs[0][f"{name}/delta_auc_vs_csa_ci_hi"]]
        out[f"{name}/delta_auc_vs_csa_ci"] = ci
        out[f"{name}/delta_auc_vs_csa_p"] = rs[0].get(f"{name}/delong_p_value_vs_csa")
        out[f"{name}/delta_auc_vs_csa_interval"] = "pairs"
    return out


def seed_interval(values, level: float = 0.95) -> dict | None:
    """The mean of per-seed values (paired differences of two attacks, one per training seed), its
    t interval (n - 1 degrees of freedom) and the two-sided p of a one-sample t test of mean 0:
    {"mean", "ci", "p", "n"}; None with fewer than 2 seeds, where the seeds give no interval.

    Training seeds are the unit a new run redraws, so their spread is the interval's; resampling
    2-3 seeds gives about [lowest seed, highest seed], which covers the mean far less often than its
    label says. Seeds that agree exactly give the zero-width interval and p 1 (mean 0) or 0."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        return None
    metrics.check_finite(x, "per-seed differences")
    mean, se = float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))
    if se == 0:
        return {"mean": mean, "ci": [mean, mean], "p": 1.0 if mean == 0 else 0.0, "n": int(x.size)}
    p = float(stats.ttest_1samp(x, 0.0).pvalue)
    ci = t_interval(mean, float(x.std(ddof=1)), int(x.size), level)
    return {"mean": mean, "ci": ci, "p": p, "n": int(x.size)}


def t_interval(mean, sd, n: int, level: float = 0.95) -> list:
    """The t interval of a mean of n seeds with standard deviation sd (n - 1 degrees of freedom):
    [lo, hi], or [None, None] with fewer than 2 seeds or no sd."""
    if sd is None or n < 2:
        return [None, None]
    q, se = float(stats.t.ppf(0.5 + level / 2, n - 1)), float(sd / np.sqrt(n))
    return [float(mean - q * se), float(mean + q * se)]


def holm(pvalues) -> list:
    """Holm's step-down adjustment of a family of p-values, in their order (None stays None): the
    i-th smallest of m becomes max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where the
    adjusted p < alpha keeps the chance of any false verdict in the family at most alpha."""
    given = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    out, running = [None] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(sorted(given)):
        running = max(running, min(1.0, (len(given) - rank) * p))
        out[i] = running
    return out


def seed_mean_delta_aucs(jobs, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the seed-mean AUC difference of attack A from attack B:
    [n_bootstrap]. `jobs` is one ((A's member, A's non-member scores), (B's member, B's non-member
    scores)) per training seed, both on the same pairs in the same order (seed_mean_metrics)."""
    return seed_mean_metrics(jobs, n_bootstrap, seed)[:, 0]


def seed_mean_metrics(jobs, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the seed-mean AUC, TPR at 1% and TPR at 0.1% FPR of attack A, or of
    their differences from attack B: [n_bootstrap, 3].

    `jobs` is one (A's (member, non-member) scores, B's or None) per training seed, A and B on the
    same pairs in the same order. Each replicate draws the seeds with replacement, and for every
    drawn seed its member and non-member pairs with replacement, the same indices for A and B
    (paired), and averages the drawn seeds' metrics (A - B where B is given): the seed_mean_gaps
    bootstrap.
    """
    rng = np.random.default_rng(seed)
    prepared = []
    for a, b in jobs:
        arrays = [np.asarray(x, np.float64) for x in (*a, *(b or ()))]
        for x, what in zip(arrays, ("member scores", "non-member scores") * 2, strict=False):
            metrics.check_finite(x, what)
        if b is not None and (arrays[0].size, arrays[1].size) != (arrays[2].size, arrays[3].size):
            raise ValueError("a paired difference needs both attacks' scores of the same pairs")
        fa = metrics.resampled_metrics(arrays[0], arrays[1])
        fb = None if b is None else metrics.resampled_metrics(arrays[2], arrays[3])
        prepared.append((arrays[0].size, arrays[1].size, fa, fb))
    if not prepared:
        raise ValueError("no jobs")
    # The seeds of a sweep score the same evaluation pairs: one draw of pairs per replicate serves
    # every drawn seed, so repeating a job adds no confidence (as seed_mean_gap_table does).
    shapes = {(n1, n0) for n1, n0, _, _ in prepared}
    out = np.empty((n_bootstrap, 3))
    for r in range(n_bootstrap):
        if len(shapes) == 1:
            n1, n0 = next(iter(shapes))
            shared = rng.integers(0, n1, (1, n1)), rng.integers(0, n0, (1, n0))
        values = []
        for j in rng.integers(0, len(prepared), len(prepared)):
            n1, n0, fa, fb = prepared[j]
            pi, ni = (
                shared
                if len(shapes) == 1
                else (rng.integers(0, n1, (1, n1)), rng.integers(0, n0, (1, n0)))
            )
            values.append(fa(pi, ni)[0] - (0 if fb is None else fb(pi, ni)[0]))
        out[r] = np.mean(values, axis=0)
    return out


def point_series(pts, x):
    """i.i.d. points grouped by everything but `x` (and the seed), each group sorted by x."""
    groups = defaultdict(list)
    for p in pts:
        if p["nonmembers"] == "iid":
            groups[tuple(p[k] for k in IDENTITY if k not in (x, "nonmembers"))].append(p)
    models = {(p["model"], p["params"]) for p in pts}
    out = {}
    for key, ps in groups.items():
        if len({p[x] for p in ps}) < 2:
            continue
        fixed, model, params, defense, wd, init = key
        tag = f",{model}({params} params)" if len(models) > 1 else ""
        if (
            len({(p["defense"], p["weight_decay"]) for p in pts}) > 1
        ):  # a privacy-utility sweep's arms
            tag += f",{defense},wd={wd}"
        if len({p["init"] for p in pts}) > 1:  # experiment=finetune's arms
            tag += f",{init}"
        name = f"gap_vs_N@T={fixed}{tag}" if x == "size" else f"gap_vs_T@N={fixed}{tag}"
        out[name] = sorted(ps, key=lambda p: p[x])
    return dict(sorted(out.items()))


def shift_series(rows) -> dict:
    """{(N, T, shifted parts): rows by increasing shift} for every target and parts a sweep shifts
    at two values or more. A shift-0 job (the i.i.d. one, whatever its parts) joins every series."""
    shifted = [r for r in rows if r["shift"] is not None]
    out = {}
    for n, t, parts in sorted(
        {(r["size"], r["epochs"], r["shift_parts"]) for r in shifted if r["shift"] > 0}
    ):
        points = {}
        for r in shifted:
            if (r["size"], r["epochs"]) == (n, t) and (
                r["shift"] == 0 or r["shift_parts"] == parts
            ):
                points.setdefault(r["shift"], r)
        if len(points) >= 2:
            out[(n, t, parts)] = [points[s] for s in sorted(points)]
    return out


def bootstrap_settings(rows) -> tuple[int, int]:
    """The sweep's own bootstrap size and seed (config keys n_bootstrap and split seed)."""
    cfg = rows[0]["_config"]
    return int(cfg["n_bootstrap"]), int(cfg["data"]["split"]["seed"])


def seed_mean_gaps(jobs, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of the seed-mean gap of one condition: [n_bootstrap].

    `jobs` is one (member_cos, nonmember_cos) pair per training seed. Each replicate draws the seeds
    with replacement, and for every drawn seed the member and non-member evaluation pairs with
    replacement (a two-level bootstrap: training runs, then evaluation pairs), and averages the
    drawn seeds' gaps. See seed_mean_gap_table for the coupled form a scaling fit uses.
    """
    return seed_mean_gap_table([jobs], n_bootstrap, seed)[:, 0]


def seed_mean_gap_table(conditions, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """Two-level bootstrap of the seed-mean gap of several conditions at once:
    [n_bootstrap, n_conditions].

    `conditions[c]` is one (member_cos, nonmember_cos) pair per seed. Where every job scored the
    same number of members and of non-members (the i.i.d. splits of a sweep score the same
    evaluation uids, in the same order, at every N and seed), one draw of evaluation pairs per
    replicate is shared by all jobs, so a pair that is easy everywhere moves every point of the
    curve together, as it would in a new experiment; otherwise each job draws its own pairs.
    Training seeds are drawn per condition.
    """
    rng = np.random.default_rng(seed)
    arrays = [
        [(np.asarray(m, np.float64), np.asarray(n, np.float64)) for m, n in jobs]
        for jobs in conditions
    ]
    for jobs in arrays:
        if not jobs:
            raise ValueError("a condition has no jobs")
        for m, n in jobs:
            metrics.check_finite(m, "member cosines")
            metrics.check_finite(n, "non-member cosines")
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
                mi, ni = shared or (
                    rng.integers(0, m.size, m.size),
                    rng.integers(0, n.size, n.size),
                )
                gaps.append(m[mi].mean() - n[ni].mean())
            out[b, c] = np.mean(gaps)
    return out
