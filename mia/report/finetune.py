"""The fine-tuning view of a sweep that trains the same members from scratch and from pretrained
weights (experiment=finetune, docs/design.md §3.6): per N and T, each measure's fine-tuned minus
from-scratch difference, paired by training seed, with a t interval over the seeds, and one Holm
family over every difference the sweep states. Written by the sweep report."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from mia.plots import plt, save
from mia.report.markdown import p_cell, verdict
from mia.report.privacy_utility import recall1
from mia.report.stats import holm, seed_interval

FILENAME = "finetune.csv"
SCRATCH = "scratch"


def _measures(reference: str) -> tuple:
    """(column, label, reader of a job's row): what each arm is compared on."""
    return (
        (f"{reference}_auc", f"{reference} AUC", lambda r: r.get(f"{reference}/auc")),
        ("gap", "cosine gap", lambda r: r["gap_value"]),
        ("loss_gap", "loss gap", lambda r: r.get("loss_gap_value")),  # None: not measured then
        ("d_prime", "d′", lambda r: r.get("d_prime_value")),
        ("recall1", "Recall@1", recall1),
    )


def applies(rows) -> bool:
    """A sweep compares starting weights when some jobs train from scratch and some do not."""
    inits = {r["init"] for r in rows}
    return SCRATCH in inits and len(inits) > 1


def finetune_rows(rows, reference: str) -> list[dict]:
    """One row per (pretrained weights, T, N, measure): both arms' seed means, the paired
    fine-tuned minus scratch difference with its t interval over the seeds both arms share, and
    its Holm-adjusted p within the sweep's family of such differences."""
    arms = defaultdict(dict)
    for r in rows:
        if r["nonmembers"] == "iid" and r["defense"] == "none":
            arms[(r["init"], r["epochs"], r["size"])][r["seed"]] = r
    out = []
    for (init, t, n), tuned in sorted(arms.items(), key=lambda kv: (str(kv[0][0]), *kv[0][1:])):
        scratch = arms.get((SCRATCH, t, n), {})
        seeds = sorted(set(tuned) & set(scratch))
        if init == SCRATCH or not seeds:
            continue
        for column, label, read in _measures(reference):
            a = [read(tuned[s]) for s in seeds]
            b = [read(scratch[s]) for s in seeds]
            if any(v is None for v in a + b):
                continue
            diff = seed_interval(np.subtract(a, b))
            out.append(
                {
                    "init": init,
                    "epochs": t,
                    "size": n,
                    "measure": label,
                    "column": column,
                    "seeds": len(seeds),
                    "scratch_mean": float(np.mean(b)),
                    "finetuned_mean": float(np.mean(a)),
                    "delta": float(np.mean(np.subtract(a, b))),
                    "delta_ci_lo": None if diff is None else diff["ci"][0],
                    "delta_ci_hi": None if diff is None else diff["ci"][1],
                    "p": None if diff is None else diff["p"],
                    "_scratch": b,
                    "_finetuned": a,
                }
            )
    for row, adjusted in zip(out, holm([r["p"] for r in out]), strict=True):
        row["p_holm"] = adjusted
    return out


def markdown(ft_rows) -> list[str]:
    """The table of differences, one line per N and measure, with the family it was adjusted in."""
    family = sum(r["p"] is not None for r in ft_rows)
    lines = [
        f"Fine-tuned minus from-scratch, paired by training seed: mean over the seeds with its t "
        f"95% interval; verdicts from Holm-adjusted p over the {family} differences below (one "
        "family).",
        "",
        "| weights | T | N | measure | seeds | scratch | fine-tuned | Δ (95% CI) | p | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ft_rows:
        ci = (
            ""
            if r["delta_ci_lo"] is None
            else f" [{r['delta_ci_lo']:+.4f}, {r['delta_ci_hi']:+.4f}]"
        )
        p = "" if r["p"] is None else p_cell(r["p"], r["p_holm"])
        said = verdict(r["p_holm"], r["delta"], "scratch") or ""
        said = said.replace("beats scratch", "higher").replace("below scratch", "lower")
        lines.append(
            f"| {r['init']} | {r['epochs']} | {r['size']} | {r['measure']} | {r['seeds']} | "
            f"{r['scratch_mean']:.4f} | {r['finetuned_mean']:.4f} | {r['delta']:+.4f}{ci} | {p} | "
            f"{said} |"
        )
    return lines


def plot(ft_rows, path) -> Path | None:
    """Each measure against N, one line per arm, the seeds as dots."""
    columns = list(dict.fromkeys(r["column"] for r in ft_rows))
    if not columns:
        return None
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        mine = [r for r in ft_rows if r["column"] == column]
        for arm, key, colour in (
            ("from scratch", "_scratch", "tab:blue"),
            ("fine-tuned", "_finetuned", "tab:orange"),
        ):
            for init in sorted({r["init"] for r in mine}):
                rs = sorted((r for r in mine if r["init"] == init), key=lambda r: r["size"])
                xs = [r["size"] for r in rs]
                ax.plot(xs, [np.mean(r[key]) for r in rs], "-o", color=colour, label=arm)
                for r in rs:
                    ax.scatter([r["size"]] * len(r[key]), r[key], s=10, color=colour, alpha=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("N (members)")
        ax.set_title(mine[0]["measure"])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Fine-tuned and from-scratch targets at the same N and T (dots: seeds)", y=1.04)
    return save(fig, path)
