"""The attack comparison (report.md, comparison.csv; docs/design.md §6.9): per condition and attack,
the seed-mean AUC and TPR at 1% FPR with 95% intervals from the two-level bootstrap (seeds, then
pairs), the seed-mean difference from CSA on the same pairs with a t interval and t test over the
seeds (one seed: over that job's pairs), the TPR at the threshold an auditor sets on known
non-members, and each variant (`<attack>_<variant>`, e.g. gradnorm_pure) against its base attack.
The report's verdicts form one family, Holm-adjusted (adjust)."""

from __future__ import annotations

import numpy as np

from mia.evaluation import metrics
from mia.report.markdown import VERDICT_ALPHA, p_cell, verdict
from mia.report.rows import attack_scores, label, reference
from mia.report.stats import IDENTITY, holm, seed_interval, seed_mean_metrics

FILENAME = "comparison.csv"
METRICS = ("auc", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3")
# The differences each comparison row tests: against the reference (vs_csa) and the base attack.
TESTED = (("vs_csa", "auc"), ("vs_csa", "tpr_at_fpr_1e-2"), ("vs_base", "auc"))


def base_of(name: str, names) -> str | None:
    """The attack `name` is a variant of (gradnorm_pure -> gradnorm), if the sweep ran that attack
    too."""
    base = name.rsplit("_", 1)[0]
    return base if "_" in name and base in names else None


def _ci(values) -> list:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def comparison_rows(pts, names, n_bootstrap: int, seed: int = 0) -> list[dict]:
    """One row per condition and attack; empty without per-pair scores or with n_bootstrap = 0."""
    out = []
    if not n_bootstrap:
        return out
    ref_name = reference([r for p in pts for r in p["_rows"]])
    for p in pts:
        rs = p["_rows"]
        scored = {n: [attack_scores(r, n) for r in rs] for n in names}
        scored = {n: jobs for n, jobs in scored.items() if all(j is not None for j in jobs)}
        for name, jobs in scored.items():
            row = {
                "size": p["size"],
                "epochs": p["epochs"],
                "nonmembers": p["nonmembers"],
                "attack": name,
                "seeds": len(rs),
                "members": len(jobs[0][0]),
                "nonmembers_scored": len(jobs[0][1]),
                "_point": tuple(p[k] for k in IDENTITY),
            }
            reps = seed_mean_metrics([(j, None) for j in jobs], n_bootstrap, seed)
            for i, m in enumerate(METRICS):
                row[m] = float(np.mean([r[f"{name}/{m}"] for r in rs]))
                row[f"{m}_ci95"] = _ci(reps[:, i])
            for k in METRICS[1:]:
                row[f"{k}_resolved"] = bool(p.get(f"{name}/{k}_resolved", False))
            for tag in ("1e-2", "1e-3"):
                tprs = [r.get(f"{name}/calibrated_tpr_{tag}") for r in rs]
                fprs = [r.get(f"{name}/calibrated_fpr_{tag}") for r in rs]
                if all(v is not None for v in tprs + fprs):
                    row[f"calibrated_tpr_{tag}"], row[f"calibrated_fpr_{tag}"] = (
                        float(np.mean(tprs)),
                        float(np.mean(fprs)),
                    )
            for ref, key in ((ref_name, "vs_csa"), (base_of(name, scored), "vs_base")):
                if ref is None or ref == name or ref not in scored:
                    continue
                row[f"{key}_attack"] = ref
                row.update(_versus(rs, name, ref, jobs, scored[ref], key, n_bootstrap, seed))
            out.append(row)
    return out


def _versus(rs, name, ref, mine, theirs, key, n_bootstrap, seed) -> dict:
    """`name`'s seed-mean AUC and TPR@1% differences from `ref` on the same pairs, each with a 95%
    interval and a two-sided p-value, and what varied in them (`<key>_interval`). Several seeds: a
    t interval and t test over the per-seed differences (seed_interval). One seed: the paired
    bootstrap over that job's pairs, DeLong's p for the AUC and the bootstrap p for the TPR; they
    speak for that one target only."""
    out = {f"{key}_interval": "seeds" if len(rs) > 1 else "pairs"}
    if len(rs) == 1:
        reps = seed_mean_metrics([(mine[0], theirs[0])], n_bootstrap, seed)
        pair_p = {
            "auc": metrics.delong(mine[0], theirs[0])["p_value"],
            "tpr_at_fpr_1e-2": metrics.bootstrap_p_value(reps[:, 1]),
        }
    for i, m in enumerate(METRICS[:2]):
        per_seed = [r[f"{name}/{m}"] - r[f"{ref}/{m}"] for r in rs]
        out[f"{key}_delta_{m}"] = float(np.mean(per_seed))
        if len(rs) > 1:
            found = seed_interval(per_seed)
            out[f"{key}_delta_{m}_ci95"], out[f"{key}_delta_{m}_p"] = found["ci"], found["p"]
        else:
            out[f"{key}_delta_{m}_ci95"], out[f"{key}_delta_{m}_p"] = _ci(reps[:, i]), pair_p[m]
    return out


def adjust(pts, rows) -> int:
    """Holm-adjust every verdict the report states, as one family: each point's ΔAUC against the
    reference (the points table) and each comparison row's ΔAUC and ΔTPR@1% against the reference
    and ΔAUC against its base attack (a row's ΔAUC against the reference is the point's test,
    counted once). Writes `<p key>_holm` beside each p-value and returns the family's size."""
    tests = {}
    for p in pts:
        for k, v in p.items():
            if k.endswith("/delta_auc_vs_csa_p") and v is not None:
                name = k.split("/")[0]
                tests.setdefault((tuple(p[i] for i in IDENTITY), name, "vs_csa", "auc"), []).append(
                    (p, k)
                )
    for r in rows:
        for key, m in TESTED:
            if r.get(f"{key}_delta_{m}_p") is not None:
                tests.setdefault((r["_point"], r["attack"], key, m), []).append(
                    (r, f"{key}_delta_{m}_p")
                )
    found = list(tests.values())
    for places, adjusted in zip(
        found, holm([places[0][0][places[0][1]] for places in found]), strict=True
    ):
        for where, k in places:
            where[f"{k}_holm"] = adjusted
    return len(found)


def _interval(row, key, spec=".3f", signed=False) -> str:
    value, (lo, hi) = row[key], row[f"{key}_ci95"]
    f = ("+" if signed else "") + spec
    return f"{value:{f}} [{lo:{f}}, {hi:{f}}]"


def _tpr(row, key) -> str:
    cell = _interval(row, key)
    return cell if row[f"{key}_resolved"] else f"({cell}, unresolved)"


def _delta(row, key, than, metric="auc") -> str:
    """'below CSA: -0.083 [-0.142, -0.029] (p 0.004, Holm 0.04)'; the verdict from the Holm-adjusted
    p."""
    k = f"{key}_delta_{metric}"
    if k not in row:
        return ""
    v = verdict(row[f"{k}_p_holm"], row[k], than)
    return f"{v}: {_interval(row, k, signed=True)} {p_cell(row[f'{k}_p'], row[f'{k}_p_holm'])}"


def markdown(rows, reference: str | None, family: int) -> list[str]:
    """report.md's comparison section: one table per condition, one line per attack; `reference`:
    the attack the others are compared with (vs_csa: CSA by default); `family`: the number of
    verdicts adjust counted."""
    than = label(reference)
    if not rows:
        return []
    md = [
        "## Attack comparison",
        "",
        "AUC and TPR: seed means with 95% intervals from a bootstrap over training seeds and "
        "evaluation pairs. Differences (Δ) are paired, on the same pairs for both attacks: seed "
        "means with a 95% t interval over the seeds' differences (n - 1 degrees of freedom), and "
        "the two-sided p of a t test over them (p) beside its Holm-adjusted value (Holm); with one "
        "seed, the paired bootstrap interval over that job's pairs and DeLong's p (ΔAUC) or the "
        "bootstrap p (ΔTPR), which speak for that one target only. The family: "
        + family_text(family)
        + '. "beats" / "below" only where the Holm-adjusted p < '
        f'{VERDICT_ALPHA:g}, "no verdict" otherwise. '
        'TPR in brackets with "unresolved": the '
        "non-members allow fewer than 10 false positives at that FPR. Calibrated: the threshold "
        "is the 99th percentile of the attack's scores on the known non-members (D_no); the TPR "
        "and FPR it gets on the evaluation pairs.",
        "",
    ]
    conditions = sorted({(r["nonmembers"], r["epochs"], r["size"]) for r in rows})
    for cond in conditions:
        rs = [r for r in rows if (r["nonmembers"], r["epochs"], r["size"]) == cond]
        over = (
            "Δ intervals over the seeds"
            if rs[0]["seeds"] > 1
            else "Δ intervals over the pairs, for this one target"
        )
        md += [
            f"### N = {cond[2]}, T = {cond[1]}, {cond[0]} non-members ({rs[0]['seeds']} "
            f"seed{'s' * (rs[0]['seeds'] > 1)}, {rs[0]['members']} + {rs[0]['nonmembers_scored']} "
            f"pairs; {over})",
            "",
            f"| attack | AUC [95% CI] | TPR@1% FPR | TPR@0.1% FPR | vs {than}: ΔAUC | "
            f"vs {than}: ΔTPR@1% | calibrated 1%: TPR (realised FPR) | vs its base attack: ΔAUC |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rs:
            calibrated = (
                ""
                if "calibrated_tpr_1e-2" not in r
                else f"{r['calibrated_tpr_1e-2']:.3f} ({r['calibrated_fpr_1e-2']:.4f})"
            )
            base = (
                ""
                if "vs_base_delta_auc" not in r
                else f"vs {r['vs_base_attack']}, " + _delta(r, "vs_base", r["vs_base_attack"])
            )
            md.append(
                f"| {r['attack']} | {_interval(r, 'auc')} | {_tpr(r, 'tpr_at_fpr_1e-2')} | "
                f"{_tpr(r, 'tpr_at_fpr_1e-3')} | {_delta(r, 'vs_csa', than)} | "
                f"{_delta(r, 'vs_csa', than, 'tpr_at_fpr_1e-2')} | {calibrated} | {base} |"
            )
        md.append("")
    return md


def family_text(family: int) -> str:
    """The report's family of verdicts (adjust), in words."""
    return (
        f"the report's {family} verdicts (each point's ΔAUC against the reference, each comparison "
        "row's ΔTPR@1% against it and ΔAUC against its base attack)"
    )
