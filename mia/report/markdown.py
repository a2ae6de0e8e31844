"""report.md's own tables: one line per point, the scaling fits, each attack's AUC against the shift
(and on the non-members the shift left unswapped), and each attack's AUC minus the baseline's
(blind). The sections with data of their own (canaries, dataset inference, privacy-utility, checks)
write theirs."""

from __future__ import annotations

from mia.report.fits import left_out
from mia.report.rows import baseline_of, label, reference
from mia.report.stats import shift_series


def points_table(pts, names):
    """One line per point: seed means ± the seeds' sd, the gap's bootstrap interval, the AUC's mean
    bootstrap sd in brackets, whether the point is in the fitted regime, each attack's TPR@1%FPR
    ("(unresolved)" where its non-members allow fewer than 10 false positives), and each attack's
    verdict against the reference attack, CSA by default (vs_csa_cell, after comparison.adjust)."""
    ref = reference([r for p in pts for r in p["_rows"]])
    models = len({(p["model"], p["params"]) for p in pts}) > 1  # a capacity sweep: say which model
    head = (
        ["N", "T", "non-members"]
        + ["model (parameters)"] * models
        + [
            "seeds",
            "member / non-member cos",
            "gap (± seed sd)",
            "gap 95% CI",
            "Gaussian AUC",
            "in fit",
        ]
        + [f"{n} AUC (± seed sd) [boot sd]" for n in names]
        + [f"{n} TPR@1%" for n in names]
        + [f"{n} vs {label(ref)}: ΔAUC [95% t CI over seeds]" for n in names if n != ref]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in pts:
        lo, hi = p["gap_ci"]
        reason = left_out(p) if p["nonmembers"] == "iid" else "(not i.i.d.)"
        cells = (
            [str(p["size"]), str(p["epochs"]), p["nonmembers"]]
            + [f"{p['model']} ({p['params']})"] * models
            + [
                str(p["n_seeds"]),
                _sides(p),
                _mean_sd(p, "gap", ".4f"),
                "" if lo is None else f"[{lo:.4f}, {hi:.4f}]",
                f"{p['gaussian_auc']:.3f}",
                "yes" if reason is None else f"no: {reason}",
            ]
        )
        cells += [
            _mean_sd(p, f"{n}/auc")
            + (f" [{p[f'{n}/auc_boot_std']:.3f}]" if p.get(f"{n}/auc_boot_std") is not None else "")
            for n in names
        ]
        cells += [
            _mean_sd(p, f"{n}/tpr_at_fpr_1e-2")
            + (
                ""
                if p.get(f"{n}/tpr_at_fpr_1e-2_resolved", True)
                or p.get(f"{n}/tpr_at_fpr_1e-2_mean") is None
                else " (unresolved)"
            )
            for n in names
        ]
        cells += [vs_csa_cell(p, n, label(ref)) for n in names if n != ref]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Verdicts ("beats" / "below") only where a difference's Holm-adjusted p is below this.
VERDICT_ALPHA = 0.05


def verdict(p_adjusted, mean, than: str) -> str | None:
    """ "beats CSA" / "below CSA" (`than`: CSA) where the family's Holm-adjusted p of the difference
    is below VERDICT_ALPHA, by the sign of its mean; "no verdict" otherwise (the family does not
    resolve it, which is no claim of equality); None without a p."""
    if p_adjusted is None or mean is None:
        return None
    if p_adjusted >= VERDICT_ALPHA or mean == 0:
        return "no verdict"
    return f"beats {than}" if mean > 0 else f"below {than}"


def interval_verdict(ci, than: str) -> str | None:
    """A single job's pair-level verdict, outside the report's family: "beats" / "below" where its
    paired 95% interval excludes 0, "no difference" where it holds 0, None without an interval."""
    lo, hi = ci if ci is not None else (None, None)
    if lo is None or hi is None:
        return None
    return f"beats {than}" if lo > 0 else f"below {than}" if hi < 0 else "no difference"


def p_cell(p, p_adjusted) -> str:
    """'(p 0.0032, Holm 0.041)': a difference's raw and Holm-adjusted p."""
    return f"(p {p:.2g}, Holm {p_adjusted:.2g})"


def vs_csa_cell(p, name, than: str) -> str:
    """'below CSA: -0.083 [-0.142, -0.029] (p 0.0032, Holm 0.041)': the point's verdict against
    `than` (the reference attack, CSA) from its Holm-adjusted p, the seed-mean ΔAUC and its interval
    (over the seeds; with one seed, over the job's pairs, marked)."""
    mean = p.get(f"{name}/delta_auc_vs_csa_mean")
    if mean is None:
        return ""
    ci, raw = p.get(f"{name}/delta_auc_vs_csa_ci"), p.get(f"{name}/delta_auc_vs_csa_p")
    if ci is None or ci[0] is None or raw is None:
        return f"{mean:+.3f} (no interval)"
    adjusted = p.get(f"{name}/delta_auc_vs_csa_p_holm")
    pairs = " over pairs, 1 seed" if p.get(f"{name}/delta_auc_vs_csa_interval") == "pairs" else ""
    word = verdict(adjusted, mean, than) or "no verdict"
    return f"{word}: {mean:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]{pairs} " + p_cell(raw, adjusted)


def fit_lines(fit_results) -> list[str]:
    md = []
    for name, fit in fit_results.items():
        if "error" in fit:
            md.append(f"- **{name}**: no fit ({fit['error']})")
        else:
            lo, hi = fit["slope_ci95"]
            ci = (
                f"95% CI [{lo:.2f}, {hi:.2f}], {fit['method']}"
                if lo is not None
                else "no interval with 2 points"
            )
            verdict = (
                ""
                if fit["contains_expected"] is None
                else (
                    f"; the interval {'contains' if fit['contains_expected'] else 'excludes'} "
                    f"{fit['expected_slope']:+.0f}"
                )
            )
            xs = ", ".join(f"{v:g}" for v in fit["fitted_x"])
            md.append(
                f"- **{name}**: slope {fit['slope']:.3f} ({ci}) over {xs}; the T/N bound predicts "
                f"about {fit['expected_slope']:+.0f}{verdict}"
            )
            c_lo, c_hi = fit.get("curvature_ci95", [None, None])
            if c_lo is not None:
                bends = c_lo > 0 or c_hi < 0
                md.append(
                    "  - curvature (quadratic term of log10 gap in log10 x) "
                    f"{fit['curvature']:+.2f}, 95% CI [{c_lo:+.2f}, {c_hi:+.2f}]: "
                    + (
                        "the points bend, so the slope above averages the "
                        "local slopes below rather than describing each part "
                        "of the curve"
                        if bends
                        else "no bend resolved"
                    )
                )
        for ex in fit["excluded"]:
            md.append(f"  - left out x={ex['x']:g} (gap {ex['y']:.4g}): {ex['reason']}")
        if fit["local_slopes"]:
            md.append(
                "  - local slopes over the whole curve: "
                + ", ".join(
                    f"{s['from']:g}->{s['to']:g}: {s['slope']:.2f}" for s in fit["local_slopes"]
                )
            )
    return md or [
        "No series with at least two values of N (or T) in the i.i.d. condition: nothing to fit."
    ]


def shift_tables(rows, names) -> list[str]:
    """report.md's lines on each shift series: one row per shift value, every attack's AUC ± std
    and, where the jobs record it, its AUC on the non-members the shift left unswapped with its 95%
    interval (at shift 0 every non-member is unswapped); then each attack's paired difference from
    the reference (CSA) on those non-members."""
    md, ref = [], reference(rows)
    for (n, t, parts), rs in shift_series(rows).items():
        attacks = [a for a in names if any(r.get(f"{a}/auc") is not None for r in rs)]
        kept = any("n_unshifted" in r for r in rs)
        head = ["shift"] + ["unshifted non-members"] * kept + attacks
        md += [
            f"## AUC against the shift (data.shift; swapped parts: {parts.replace('+', ', ')}; "
            f"N={n}, T={t})",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for r in rs:
            cells = (
                [f"{r['shift']:g}"]
                + [_n_unshifted(r)] * kept
                + [_shift_cell(r, a) for a in attacks]
            )
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
        if kept:
            md += _vs_csa_unshifted(rs, [a for a in attacks if a != ref], label(ref))
    return md


def _n_unshifted(r) -> str:
    return "all" if r["shift"] == 0 else str(r.get("n_unshifted", ""))


def _shift_cell(r, a) -> str:
    """'0.812 ± 0.010 (unshifted 0.701 [0.684, 0.719])'; the plain AUC alone at shift 0."""
    if r.get(f"{a}/auc") is None:
        return ""
    cell = _fmt(r[f"{a}/auc"]) + (
        "" if r.get(f"{a}/auc_std") is None else f" ± {r[f'{a}/auc_std']:.3f}"
    )
    u, lo = r.get(f"{a}/auc_unshifted"), r.get(f"{a}/auc_unshifted_ci_lo")
    if r["shift"] == 0 or u is None:
        return cell
    return (
        cell
        + f" (unshifted {u:.3f}"
        + ("" if lo is None else f" [{lo:.3f}, {r[f'{a}/auc_unshifted_ci_hi']:.3f}]")
        + ")"
    )


def _vs_csa_unshifted(rs, attacks, than: str) -> list[str]:
    """Each attack's AUC minus the reference's (`than`: CSA) on the members and the unswapped
    non-members, by shift: does it beat CSA without the shifted pairs' help?"""
    if not attacks:
        return []
    md = [
        f"Each attack's AUC minus {than}'s on the members and the non-members the shift left "
        "unswapped (all of them at shift 0), with its paired 95% interval over that one job's "
        'pairs; "beats" / '
        '"below" only where it excludes 0, unadjusted: these verdicts are not in the family of the '
        "attack comparison.",
        "",
        "| shift | " + " | ".join(attacks) + " |",
        "|" + "---|" * (len(attacks) + 1),
    ]
    for r in rs:
        tag = (
            "" if r["shift"] == 0 else "_unshifted"
        )  # at shift 0 vs_csa is on the unshifted non-members already
        cells = []
        for a in attacks:
            d, lo, hi = (r.get(f"{a}/delta_auc_vs_csa{tag}{k}") for k in ("", "_ci_lo", "_ci_hi"))
            v = None if d is None else interval_verdict((lo, hi), than)
            cells.append(
                ""
                if d is None
                else f"{d:+.3f}"
                if v is None
                else f"{v}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            )
        md.append(f"| {r['shift']:g} | " + " | ".join(cells) + " |")
    return md + [""]


def skipped_lines(rows) -> list[str]:
    """One line per attack a job could not score (results.json's `skipped`), with the job and the
    reason; nothing where every job scored every attack."""
    found = [
        f"- job {r['job']} (N={r['size']}, T={r['epochs']}, {r['nonmembers']}, seed {r['seed']}): "
        f"{name}: {why}"
        for r in rows
        for name, why in r["_skipped"].items()
    ]
    if not found:
        return []
    return (
        [
            "## Not scored",
            "",
            "Attacks the data gave nothing to score with in a job; they have no row or "
            "point there.",
            "",
        ]
        + found
        + [""]
    )


def minus_baseline_table(rows, names):
    """The table of attack AUC minus the same job's baseline AUC (blind), or None if no job ran
    one."""
    key = f"auc_minus_{baseline_of(rows)}"
    names = [n for n in names if any(f"{n}/{key}" in r for r in rows)]
    rows = [r for r in rows if any(f"{n}/{key}" in r for n in names)]
    if not rows:
        return None
    head = ["N", "T", "non-members"] + names
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["size"]), str(r["epochs"]), r["nonmembers"]]
        cells += [f"{r[f'{n}/{key}']:+.3f}" if f"{n}/{key}" in r else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value, spec=".3f"):
    return "" if value is None else format(value, spec)


def _mean_sd(p, key, spec=".3f"):
    """'mean' with one seed, 'mean ± seed sd' with several."""
    mean, sd = p.get(f"{key}_mean"), p.get(f"{key}_seed_std")
    return "" if mean is None else _fmt(mean, spec) + ("" if sd is None else f" ± {_fmt(sd, spec)}")


def _sides(p) -> str:
    return f"{p['member_cos_mean']:.3f} / {p['nonmember_cos_mean']:.3f}"
