"""The sweep report's canary section (docs/design.md §2.9): each attack's AUC and TPR@1%FPR per copy
count of the duplicated canaries, per N, from results.json's `canaries`."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

from mia.plots import plt, save
from mia.report.rows import attack_order

FILENAME = "canaries.csv"


def canary_rows(rows) -> list[dict]:
    """One row per (job, attack, copy count); the attack's member_eval AUC beside it for
    reference."""
    out = []
    for r in rows:
        c = r["_results"].get("canaries")  # only where data.canaries.copies asked for some
        if not c:
            continue
        for attack, by_copy in c["attacks"].items():
            for label, m in by_copy.items():
                out.append(
                    {
                        "job": r["job"],
                        "size": r["size"],
                        "epochs": r["epochs"],
                        "seed": r["seed"],
                        "attack": attack,
                        "copies": int(label.split("=")[1]),
                        "count": c["count"],
                        "auc": m["auc"],
                        "auc_ci_lo": m["auc_ci95"][0] if m["auc_ci95"] else None,
                        "auc_ci_hi": m["auc_ci95"][1]
                        if m["auc_ci95"]
                        else None,  # none: n_bootstrap=0
                        "tpr_at_fpr_1e-2": m["tpr_at_fpr_1e-2"],
                        "member_eval_auc": r[f"{attack}/auc"],
                    }
                )
    return out


def markdown(c_rows, first: str | None = None) -> list[str]:
    """report.md's canary section; `first`: the attack listed first (the sweep's reference)."""
    if not c_rows:
        return []
    copies = sorted({r["copies"] for r in c_rows})
    md = [
        "## Duplicated canaries",
        "",
        f"{c_rows[0]['count']} canaries per copy count, each trained on `copies` times per epoch "
        "and scored as a member set against the job's evaluation non-members (docs/design.md "
        "§2.9). member_eval: the attack's AUC on the ordinary members (one copy, in the member "
        "pool). AUC (95% CI) / TPR@1%FPR.",
        "",
        "| N | T | seed | attack | member_eval AUC | "
        + " | ".join(f"{c} copies" for c in copies)
        + " | rises with copies |",
        "|---|---|---|---|---|" + "---|" * len(copies) + "---|",
    ]
    groups = defaultdict(dict)
    for r in c_rows:
        groups[(r["size"], r["epochs"], r["seed"], r["attack"])][r["copies"]] = r
    for (n, t, seed, attack), by in sorted(
        groups.items(), key=lambda kv: (attack_order(kv[0][3], first), kv[0][:3])
    ):
        cells = [_cell(by.get(c)) for c in copies]
        aucs = [by[c]["auc"] for c in copies if c in by]
        rises = all(b > a for a, b in pairwise(aucs))
        member = next(iter(by.values()))["member_eval_auc"]
        md.append(
            f"| {n} | {t} | {seed} | {attack} | {member:.3f} | "
            + " | ".join(cells)
            + f" | {'yes' if rises else 'no'} |"
        )
    return md


def _cell(r) -> str:
    if r is None:
        return ""
    ci = f" ({r['auc_ci_lo']:.3f}-{r['auc_ci_hi']:.3f})" if r["auc_ci_lo"] is not None else ""
    return f"{r['auc']:.3f}{ci} / {r['tpr_at_fpr_1e-2']:.2f}"


def plot_auc_vs_copies(c_rows, path, first: str | None = None):
    """AUC against the copy count, one line per attack (`first` first), one panel per N."""
    if not c_rows:
        return None
    sizes = sorted({r["size"] for r in c_rows})
    fig, axes = plt.subplots(
        1, len(sizes), figsize=(5 * len(sizes), 4.2), squeeze=False, sharey=True
    )
    attacks = sorted({r["attack"] for r in c_rows}, key=lambda a: attack_order(a, first))
    for ax, n in zip(axes[0], sizes, strict=True):
        for i, attack in enumerate(attacks):
            pts = sorted(
                (r["copies"], r["auc"]) for r in c_rows if r["size"] == n and r["attack"] == attack
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=f"C{i % 10}", label=attack)
        ax.axhline(0.5, color="gray", lw=0.8)
        ax.set(xscale="log", xlabel="copies per epoch", title=f"N = {n}")
        ax.set_xticks(
            sorted({r["copies"] for r in c_rows}),
            [str(c) for c in sorted({r["copies"] for r in c_rows})],
        )
    axes[0][0].set_ylabel("canary AUC")
    handles = {}
    for ax in axes[0]:  # one legend for every attack, whichever panels it ran in
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="center right")
    fig.subplots_adjust(right=0.85)
    return save(fig, path)
