"""The two-factor law of the gap (docs/design.md §6.7): where a sweep varies both epochs T and size
N, log10 gap = a + alpha log10 T - beta log10 N, fitted by least squares through the cells' seed
means over the cells that can speak (not under-trained, not saturated, resolved), for each measure
of the gap a job records (the cosine gap, the loss gap, d'), with intervals that carry the plane's
misfit beside intervals from the seeds alone; the plane with a log T x log N interaction; a test of
whether the cells collapse onto one curve of T/N (or of optimiser steps); the constant an upper
bound C T/N needs; and the gap ratio of cells with the same T*N, which tells epochs from steps."""

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
LEVEL = 0.95  # every interval's coverage; a test rejects at p < 1 - LEVEL
# analysis.law's settings (conf/analysis/default.yaml), used where a job's config predates them
DEFAULTS = {"min_steps": 300, "max_member_cos": 0.95}
# The measures a plane is fitted to: {name: (points' mean key, seed sd key, sign, what)}; the sign
# makes each positive where members are fitted better (a member's loss is the lower).
MEASURES = {
    "gap": ("gap_mean", "gap_seed_std", 1.0, "cosine gap"),
    "loss_gap": ("loss_gap_mean", "loss_gap_seed_std", -1.0, "loss gap (non-member - member)"),
    "d_prime": ("d_prime_mean", "d_prime_seed_std", 1.0, "d'"),
}
_ARM = tuple(k for k in IDENTITY if k not in ("nonmembers", "epochs", "size"))


def settings(config: dict) -> dict:
    """analysis.law of a job's config over DEFAULTS (a job recorded before the setting has none)."""
    return {**DEFAULTS, **(config.get("analysis", {}).get("law") or {})}


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


def cell_left_out(p, setting: dict) -> str | None:
    """Why a cell cannot speak for the law, or None: under-trained (fewer optimiser steps than
    analysis.law.min_steps; unknown steps are not judged), saturated (mean member cosine at or
    above analysis.law.max_member_cos, or fits.left_out's Gaussian AUC), or a gap that does not
    resolve (fits.left_out)."""
    steps = p.get("steps")
    if steps is not None and steps < setting["min_steps"]:
        return (
            f"under-trained: {steps} optimiser steps < analysis.law.min_steps = "
            f"{setting['min_steps']}"
        )
    member = p.get("member_cos_mean")
    if member is not None and member >= setting["max_member_cos"]:
        return (
            f"saturated: mean member cosine {member:.3f} >= analysis.law.max_member_cos = "
            f"{setting['max_member_cos']}"
        )
    return left_out(p)


def fit_law(ps, n_bootstrap: int, seed: int = 0, setting: dict | None = None) -> dict:
    """The law of one grid's points (module docstring): the cells it used and left out (with the
    reason, cell_left_out), a fit per measure under `measures` (the cosine gap's also at the top
    level), the cosine gap's bootstrap over seeds and pairs, and the equal-steps ratios."""
    setting = {**DEFAULTS, **(setting or {})}
    reasons = [cell_left_out(p, setting) for p in ps]
    keep = [p for p, why in zip(ps, reasons, strict=True) if why is None]
    seeded = sum(p["n_seeds"] >= ENOUGH_SEEDS for p in keep)
    members = [p["member_cos_mean"] for p in ps if p.get("member_cos_mean") is not None]
    out = {
        "cells": [_cell(p) for p in keep],
        "excluded": [
            {**_cell(p), "reason": why}
            for p, why in zip(ps, reasons, strict=True)
            if why is not None
        ],
        "settings": setting,
        "member_cos_range": [min(members), max(members)] if members else [None, None],
        "n_points": len(keep),
        "n_cells_enough_seeds": seeded,
        "enough_cells": seeded >= ENOUGH_CELLS,
        "expected": EXPECTED,
        "measures": {name: fit_measure(ps, keep, name) for name in MEASURES},
    }
    out.update({k: v for k, v in out["measures"]["gap"].items() if k != "upper_bound"})
    positive = [p for p in ps if p["gap_mean"] > 0]
    # One bootstrap table for the whole grid: the fit and the ratios share each replicate's draw of
    # pairs.
    table = (
        seed_mean_gap_table([p["_cos"] for p in positive], n_bootstrap, seed)
        if n_bootstrap and positive and all(p.get("_cos") is not None for p in positive)
        else None
    )
    if table is not None and "error" not in out:
        column = {id(p): c for c, p in enumerate(positive)}
        kept = [p for p in keep if p["gap_mean"] > 0]
        try:
            out["bootstrap"] = bootstrap_law(kept, table[:, [column[id(p)] for p in kept]])
        except ValueError as err:
            out["bootstrap"] = {"error": str(err)}
    out["equal_steps"] = equal_steps(positive, table, fitted(out))
    return out


def fitted(fit) -> set:
    """The (T, N) of the cells a law's fit kept."""
    return {(c["epochs"], c["size"]) for c in fit["cells"]}


def _cell(p) -> dict:
    out = {
        "epochs": p["epochs"],
        "size": p["size"],
        "steps": p.get("steps"),
        "n_seeds": p["n_seeds"],
        "member_cos": p.get("member_cos_mean"),
        "gap": p["gap_mean"],
        "gap_ci95": p["gap_ci"],
    }
    for name in MEASURES:
        if name != "gap":
            out[name] = p.get(f"{name}_mean")
        out[f"{name}_seed_ci95"] = p.get(f"{name}_seed_ci", [None, None])
    return out


def fit_measure(ps, keep, name: str) -> dict:
    """One measure's law over the kept cells: the plane with intervals from its residuals (seed
    variance and misfit together) and from the seeds alone, its lack of fit, the plane with an
    interaction, the collapse test and the upper bound's constant (over every cell); {"error"}
    where the cells cannot give a plane."""
    mean_key, sd_key, sign, what = MEASURES[name]
    missing = [p for p in keep if p.get(mean_key) is None]
    out = {"measure": what}
    if missing:
        return {
            **out,
            "error": f"no {what} in {len(missing)} of the {len(keep)} kept cells (jobs recorded "
            "before results.json carried it)",
        }
    used = [p for p in keep if sign * p[mean_key] > 0]
    out["non_positive"] = [
        {"epochs": p["epochs"], "size": p["size"]} for p in keep if sign * p[mean_key] <= 0
    ]
    out["upper_bound"] = upper_bound(ps, mean_key, sign)
    try:
        x = design(used)
    except ValueError as err:
        return {**out, "error": str(err)}
    mean = np.array([sign * p[mean_key] for p in used])
    y = np.log10(mean)
    var, dof = _seed_variance(used, mean, sd_key)
    plane = _model(x, y, var, dof)
    out.update(
        {
            "n_points": len(used),
            "region": {
                "T": [min(p["epochs"] for p in used), max(p["epochs"] for p in used)],
                "N": [min(p["size"] for p in used), max(p["size"] for p in used)],
            },
            "a": plane["coef"][0],
            "alpha": plane["coef"][1],
            "alpha_ci95": plane["ci95"][1],
            "alpha_ci95_seeds": plane["ci95_seeds"][1],
            "beta": plane["coef"][2],
            "beta_ci95": plane["ci95"][2],
            "beta_ci95_seeds": plane["ci95_seeds"][2],
            "dof": plane["dof"],
            "seed_dof": plane["seed_dof"][1:],
            "method": "OLS through the cells' log10 seed means; t intervals from its residuals "
            "(seed variance and misfit); _seeds: from the seeds' variance alone (Satterthwaite)",
            "residual_sd": plane["residual_sd"],
            "seed_sd": _sqrt(None if var is None else float(np.mean(var))),
            "r2": _r2(y, plane["rss"]),
            "lack_of_fit": lack_of_fit(plane, var, dof),
        }
    )
    out["verdict"] = verdict(out["alpha_ci95"], out["beta_ci95"])
    out["excludes_1"] = [
        k for k in ("alpha", "beta") if out[f"{k}_ci95"][0] is not None and not _has(out, k)
    ]
    out["interaction"] = interaction(used, y, var, dof, plane)
    out["collapse"] = collapse(used, y, var, dof, plane)
    return out


def _has(fit, k) -> bool:
    lo, hi = fit[f"{k}_ci95"]
    return bool(lo <= EXPECTED <= hi)


def _seed_variance(ps, mean, sd_key):
    """Each cell's variance of log10 of its seed mean from the seeds (delta method:
    (sd / (mean ln 10))^2 / seeds) and its degrees of freedom (seeds - 1); (None, None) where a
    cell has one seed or no spread recorded."""
    sds = [p.get(sd_key) for p in ps]
    if None in sds or any(p["n_seeds"] < 2 for p in ps):
        return None, None
    n = np.array([p["n_seeds"] for p in ps], float)
    return (np.array(sds, float) / (mean * np.log(10))) ** 2 / n, n - 1


def _model(x, y, var, dof) -> dict:
    """OLS of y on the design x: coefficients, t intervals from the residuals (None without
    residual degrees of freedom), and intervals from the per-cell seed variances `var` alone,
    each coefficient's variance sum_c L_jc^2 var_c with Satterthwaite's degrees of freedom."""
    n, k = x.shape
    pinv = np.linalg.pinv(x)  # L: coef = L y
    coef = pinv @ y
    rss = float(((y - x @ coef) ** 2).sum())
    out = {
        "coef": [float(c) for c in coef],
        "rss": rss,
        "dof": n - k,
        "residual_sd": _sqrt(rss / (n - k)) if n > k else None,
        "ci95": [[None, None]] * k,
        "ci95_seeds": [[None, None]] * k,
        "seed_dof": [None] * k,
    }
    if n > k:
        se = np.sqrt(np.diag(rss / (n - k) * np.linalg.inv(x.T @ x)))
        q = stats.t.ppf(0.5 + LEVEL / 2, n - k)
        out["ci95"] = [[float(c - q * s), float(c + q * s)] for c, s in zip(coef, se, strict=True)]
    if var is not None:
        for j in range(k):
            w = pinv[j] ** 2 * var
            total = float(w.sum())
            if total == 0:
                out["ci95_seeds"][j] = [float(coef[j])] * 2
                continue
            nu = total**2 / float((w**2 / dof).sum())
            half = stats.t.ppf(0.5 + LEVEL / 2, nu) * np.sqrt(total)
            out["ci95_seeds"][j] = [float(coef[j] - half), float(coef[j] + half)]
            out["seed_dof"][j] = float(nu)
    return out


def _sqrt(v):
    return None if v is None else float(np.sqrt(v))


def _r2(y, rss) -> float | None:
    total = float(((y - y.mean()) ** 2).sum())
    return None if total == 0 else 1 - rss / total


def lack_of_fit(model, var, dof) -> dict:
    """Is the model's residual variance more than the seeds' variance of a cell mean? F = (RSS /
    its dof) / mean seed variance, on (residual dof, sum of seeds - 1) degrees of freedom; p small:
    the cells miss the model by more than their seeds vary."""
    if var is None or model["dof"] <= 0 or float(np.mean(var)) == 0:
        return {"F": None, "dof": [model["dof"], None], "p": None}
    f = model["rss"] / model["dof"] / float(np.mean(var))
    d2 = float(dof.sum())
    return {"F": float(f), "dof": [model["dof"], d2], "p": float(stats.f.sf(f, model["dof"], d2))}


def _nested(small, big) -> dict:
    """F test of a model nested in a bigger one: does the bigger one's extra terms explain more of
    the cells than its residual variance?"""
    extra = small["dof"] - big["dof"]
    if big["dof"] <= 0 or extra <= 0 or big["rss"] == 0:
        return {"F": None, "dof": [extra, big["dof"]], "p": None}
    f = (small["rss"] - big["rss"]) / extra / (big["rss"] / big["dof"])
    return {"F": float(f), "dof": [extra, big["dof"]], "p": float(stats.f.sf(f, extra, big["dof"]))}


def _logs(ps):
    return np.log10([p["epochs"] for p in ps]), np.log10([p["size"] for p in ps])


def interaction(ps, y, var, dof, plane) -> dict:
    """The plane with a log10 T x log10 N term, both centred on the cells' geometric means, so
    alpha and beta are the exponents at the grid's centre and gamma how alpha changes per decade
    of N; with the F test of gamma against the plane."""
    lt, ln = _logs(ps)
    ct, cn = lt - lt.mean(), ln - ln.mean()
    x = np.column_stack([np.ones(len(ps)), ct, -cn, ct * cn])
    if len(ps) < 5 or np.linalg.matrix_rank(x) < 4:
        return {"error": "fewer than five cells off one line: no interaction term with a residual"}
    m = _model(x, y, var, dof)
    out = {"centre": {"T": float(10 ** lt.mean()), "N": float(10 ** ln.mean())}}
    for j, k in ((1, "alpha"), (2, "beta"), (3, "gamma")):
        out[k], out[f"{k}_ci95"], out[f"{k}_ci95_seeds"] = (
            m["coef"][j],
            m["ci95"][j],
            m["ci95_seeds"][j],
        )
    out.update(
        {
            "dof": m["dof"],
            "residual_sd": m["residual_sd"],
            "vs_plane": _nested(plane, m),
            "lack_of_fit": lack_of_fit(m, var, dof),
        }
    )
    return out


def collapse(ps, y, var, dof, plane) -> dict:
    """Do the cells fall on one curve of T/N, or of optimiser steps (T*N where the steps are not
    recorded)? Each curve is a quadratic in its log10 and is nested in the full quadratic in
    (log10 T, log10 N); the F test of the curve against it (p < 1 - LEVEL: the cells do not
    collapse), each model's residual sd beside the plane's and the seeds', and each one's lack of
    fit against the seeds."""
    lt, ln = _logs(ps)
    steps = [p.get("steps") for p in ps]
    ls = np.log10(steps) if None not in steps else lt + ln
    one = np.ones(len(ps))
    curves = {
        "t_over_n": lt - ln,
        "steps": ls,
    }
    models = {"plane": plane}
    for k, u in curves.items():
        u = u - u.mean()
        x = np.column_stack([one, u, u**2])
        if np.linalg.matrix_rank(x) == 3:
            models[k] = _model(x, y, var, dof)
    ct, cn = lt - lt.mean(), ln - ln.mean()
    general = np.column_stack([one, ct, cn, ct**2, cn**2, ct * cn])
    if np.linalg.matrix_rank(general) == 6 and len(ps) > 6:
        models["general"] = _model(general, y, var, dof)
    out = {
        "steps_from": "steps" if None not in steps else "T*N",
        "models": {
            k: {
                "n_params": len(m["coef"]),
                "dof": m["dof"],
                "residual_sd": m["residual_sd"],
                "lack_of_fit": lack_of_fit(m, var, dof),
                **(
                    {"vs_general": _nested(m, models["general"])}
                    if k in curves and "general" in models
                    else {}
                ),
            }
            for k, m in models.items()
        },
    }
    for k in curves:
        p = out["models"].get(k, {}).get("vs_general", {}).get("p")
        out[k] = None if p is None else ("collapses" if p >= 1 - LEVEL else "does not collapse")
    return out


def upper_bound(ps, mean_key, sign) -> dict:
    """The constant an upper bound gap <= C T/N needs on these cells: C = the largest gap N / T
    over every cell with a positive value (fitted or not), and the spread of gap N / T. Every
    cell respects the bound with that C by construction; only a constant fixed beforehand makes
    the statement testable."""
    ratios = [
        (sign * p[mean_key] * p["size"] / p["epochs"], p)
        for p in ps
        if p.get(mean_key) is not None and sign * p[mean_key] > 0
    ]
    if not ratios:
        return {"C": None}
    top = max(ratios, key=lambda r: r[0])
    lo = min(r for r, _ in ratios)
    return {
        "C": float(top[0]),
        "at": {"epochs": top[1]["epochs"], "size": top[1]["size"]},
        "ratio_range": [float(lo), float(top[0])],
        "spread": float(top[0] / lo),
        "informative": False,
        "note": "C is the largest gap N / T over these cells, so every cell respects gap <= C T/N "
        "by construction; a bound tests something only with a constant fixed beforehand",
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
    """The cosine gap's plane refitted on every bootstrap replicate ([B, cells],
    seed_mean_gap_table), with percentile 95% intervals on alpha and beta: the cells' sampling
    noise only, not the plane's misfit. A replicate with a non-positive gap has no logarithm:
    counted in n_invalid and left out, and the intervals are refused past MAX_INVALID of them."""
    x = design(ps)
    replicates = np.asarray(replicates, np.float64)
    valid = (replicates > 0).all(axis=1)
    n_invalid = int((~valid).sum())
    if n_invalid > MAX_INVALID * len(replicates):
        raise ValueError(
            f"{n_invalid} of {len(replicates)} bootstrap replicates have a non-positive gap: "
            "the noisiest cell cannot be fitted on a log scale"
        )
    reps = solve(x, replicates[valid])
    ci = [[float(v) for v in np.percentile(reps[i], [2.5, 97.5])] for i in (1, 2)]
    return {
        "alpha_ci95": ci[0],
        "beta_ci95": ci[1],
        "method": "bootstrap over seeds and evaluation pairs (sampling noise only, no misfit)",
        "n_bootstrap": int(len(replicates)),
        "n_invalid": n_invalid,
    }


def verdict(alpha_ci, beta_ci) -> str | None:
    """ "T/N holds" where both 95% intervals contain 1, "holds in part" where one does, "fails"
    where neither does; None without intervals."""
    if None in (*alpha_ci, *beta_ci):
        return None
    inside = sum(lo <= EXPECTED <= hi for lo, hi in (alpha_ci, beta_ci))
    return {2: "T/N holds", 1: "holds in part", 0: "fails"}[inside]


def equal_steps(ps, table, kept=None) -> list[dict]:
    """Every two cells with the same T*N (the same optimiser steps at a fixed batch size, up to the
    last batch's rounding): the gap of the one with more epochs over the other's, with a 95%
    interval from the bootstrap `table` ([B, len(ps)], or None: no interval), and whether both are
    among the `kept` (T, N) of the fit (None: fits.left_out's regime). Steps alone predict 1; T/N
    predicts (T1 / T2) (N2 / N1)."""
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
                "both_fitted": all(
                    left_out(c) is None if kept is None else (c["epochs"], c["size"]) in kept
                    for c in (more, fewer)
                ),
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
        "One plane per measure through the cells that can speak: under-trained, saturated and "
        "unresolved cells are left out (listed below). T/N predicts alpha = beta = 1. Intervals "
        "are OLS t intervals from the plane's residuals, so they carry its misfit as well as the "
        "seeds' variance; beside them (seeds) the seeds' variance alone. The verdict reads the "
        'misfit-inclusive intervals: "T/N holds" where both contain 1, "holds in part" where one '
        'does, "fails" where neither does (docs/design.md §6.7).',
        "",
    ]
    for name, fit in law_results.items():
        md.append(f"- **{name}**")
        for measure in fit["measures"].values():
            md += ["  " + line for line in _measure_lines(measure)]
        md.append(
            f"  - {fit['n_cells_enough_seeds']} fitted cells with >= {ENOUGH_SEEDS} seeds: "
            + (
                "enough"
                if fit["enough_cells"]
                else f"fewer than {ENOUGH_CELLS}, a fit to read with care"
            )
        )
        lo, hi = fit["member_cos_range"]
        if lo is not None:
            md.append(f"  - mean member cosine over the grid: {lo:.3f} to {hi:.3f}")
        boot = fit.get("bootstrap")
        if boot and "error" not in boot:
            md.append(
                f"  - cosine gap, bootstrap over seeds and pairs (no misfit): alpha "
                f"{_ci(boot['alpha_ci95'])}, beta {_ci(boot['beta_ci95'])}"
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


def _measure_lines(fit) -> list[str]:
    what = fit["measure"]
    if "error" in fit:
        return [f"- {what}: no fit ({fit['error']})"]
    lof = fit["lack_of_fit"]
    md = [
        f"- {what}: alpha {fit['alpha']:.2f} {_ci(fit['alpha_ci95'])} (seeds "
        f"{_ci(fit['alpha_ci95_seeds'])}), beta {fit['beta']:.2f} {_ci(fit['beta_ci95'])} (seeds "
        f"{_ci(fit['beta_ci95_seeds'])}) over {fit['n_points']} cells, R^2 {_num(fit['r2'])}, "
        f"residual sd {_num(fit['residual_sd'])} vs seeds' {_num(fit['seed_sd'])} (log10; lack "
        f"of fit p {_num(lof['p'], '.2g')}): **{fit['verdict'] or 'no interval, no verdict'}**"
        + (
            f" ({' and '.join(fit['excludes_1'])} {_excl(fit['excludes_1'])} 1)"
            if fit["excludes_1"]
            else ""
        )
    ]
    inter = fit["interaction"]
    if "error" not in inter:
        md.append(
            f"  - with a log T x log N term: gamma {inter['gamma']:.2f} "
            f"{_ci(inter['gamma_ci95'])}, F test against the plane p "
            f"{_num(inter['vs_plane']['p'], '.2g')}; at T = {inter['centre']['T']:.3g}, N = "
            f"{inter['centre']['N']:.4g}: alpha {inter['alpha']:.2f} {_ci(inter['alpha_ci95'])}, "
            f"beta {inter['beta']:.2f} {_ci(inter['beta_ci95'])}"
        )
    col = fit["collapse"]
    for k, label in (("t_over_n", "T/N"), ("steps", col["steps_from"])):
        m = col["models"].get(k)
        if m and "vs_general" in m:
            md.append(
                f"  - one curve of {label} (quadratic): residual sd {_num(m['residual_sd'])}, "
                f"against the full quadratic in (log T, log N) p "
                f"{_num(m['vs_general']['p'], '.2g')}: {col[k]}"
            )
    bound = fit["upper_bound"]
    if bound["C"] is not None:
        lo, hi = bound["ratio_range"]
        md.append(
            f"  - gap N / T spans {lo:.3g} to {hi:.3g} (x{bound['spread']:.1f}); gap <= C T/N "
            f"with C = {bound['C']:.3g} (at T={bound['at']['epochs']}, N={bound['at']['size']}) "
            "holds by construction, not as a test"
        )
    return md


def _excl(names) -> str:
    return "excludes" if len(names) == 1 else "exclude"


def _num(v, fmt=".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def _ci(ci) -> str:
    lo, hi = ci
    return "(no interval)" if lo is None else f"[{lo:.2f}, {hi:.2f}]"
