"""The attack comparison (report.md, comparison.csv; docs/design.md §6.9): per condition and attack,
the seed-mean AUC and TPR at 1% FPR with 95% intervals from the two-level bootstrap (seeds, then
pairs), the seed-mean difference from CSA on the same pairs, the TPR at the threshold an auditor
sets on known non-members, and each variant (`<attack>_<variant>`, e.g. gradnorm_pure) against its
base attack."""

from __future__ import annotations

import numpy as np

from mia.report.markdown import verdict
from mia.report.rows import attack_scores, label, reference
from mia.report.stats import seed_mean_metrics

FILENAME = "comparison.csv"
METRICS = ("auc", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3")


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
                deltas = seed_mean_metrics(
                    list(zip(jobs, scored[ref], strict=True)), n_bootstrap, seed
                )
                row[f"{key}_attack"] = ref
                row[f"{key}_delta_auc"] = row["auc"] - float(np.mean([r[f"{ref}/auc"] for r in rs]))
                row[f"{key}_delta_auc_ci95"] = _ci(deltas[:, 0])
                row[f"{key}_delta_tpr_at_fpr_1e-2"] = row["tpr_at_fpr_1e-2"] - float(
                    np.mean([r[f"{ref}/tpr_at_fpr_1e-2"] for r in rs])
                )
                row[f"{key}_delta_tpr_at_fpr_1e-2_ci95"] = _ci(deltas[:, 1])
            out.append(row)
    return out


def _interval(row, key, spec=".3f", signed=False) -> str:
    value, (lo, hi) = row[key], row[f"{key}_ci95"]
    f = ("+" if signed else "") + spec
    return f"{value:{f}} [{lo:{f}}, {hi:{f}}]"


def _tpr(row, key) -> str:
    cell = _interval(row, key)
    return cell if row[f"{key}_resolved"] else f"({cell}, unresolved)"


def _delta(row, key, than) -> str:
    if f"{key}_delta_auc" not in row:
        return ""
    ci = row[f"{key}_delta_auc_ci95"]
    return f"{verdict(ci, than)}: {_interval(row, f'{key}_delta_auc', signed=True)}"


def markdown(rows, reference: str | None) -> list[str]:
    """report.md's comparison section: one table per condition, one line per attack; `reference` is the
    attack the others are compared with (vs_csa: CSA by default)."""
    than = label(reference)
    if not rows:
        return []
    md = [
        "## Attack comparison",
        "",
        "Seed means with 95% intervals from a bootstrap over training seeds and evaluation pairs "
        '(the same pairs for every attack, so differences are paired). "beats" / "below" only '
        'where the interval of the difference excludes 0. TPR in brackets with "unresolved": the '
        "non-members allow fewer than 10 false positives at that FPR. Calibrated: the threshold "
        "is the 99th percentile of the attack's scores on the known non-members (D_no); the TPR "
        "and FPR it gets on the evaluation pairs.",
        "",
    ]
    conditions = sorted({(r["nonmembers"], r["epochs"], r["size"]) for r in rows})
    for cond in conditions:
        rs = [r for r in rows if (r["nonmembers"], r["epochs"], r["size"]) == cond]
        md += [
            f"### N = {cond[2]}, T = {cond[1]}, {cond[0]} non-members ({rs[0]['seeds']} seeds, "
            f"{rs[0]['members']} + {rs[0]['nonmembers_scored']} pairs)",
            "",
            f"| attack | AUC [95% CI] | TPR@1% FPR | TPR@0.1% FPR | vs {than}: ΔAUC | vs {than}: ΔTPR@1% | "
            "calibrated 1%: TPR (realised FPR) | vs its base attack: ΔAUC |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rs:
            tpr_delta = (
                ""
                if "vs_csa_delta_auc" not in r
                else _interval(r, "vs_csa_delta_tpr_at_fpr_1e-2", signed=True)
            )
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
                f"{_tpr(r, 'tpr_at_fpr_1e-3')} | {_delta(r, 'vs_csa', than)} | {tpr_delta} | {calibrated} | "
                f"{base} |"
            )
        md.append("")
    return md
