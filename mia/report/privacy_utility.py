"""The privacy-utility view of a sweep that compares defenses (experiment=privacy_utility,
docs/design.md §11.6): one row per arm, leakage (AUC, TPR@1%FPR of each attack) against utility
(Recall@1), with the undefended target as the reference point. Written by the sweep report."""

from __future__ import annotations

from pathlib import Path

from mia.plots import plt, save

METRICS = (("auc", "AUC"), ("tpr_at_fpr_1e-2", "TPR@1%FPR"))


def applies(rows) -> bool:
    """A sweep compares defenses when some job has one, or its jobs differ in weight decay."""
    return any(r["defense"] != "none" for r in rows) or len({r["weight_decay"] for r in rows}) > 1


def recall1(row) -> float:
    """Recall@1 averaged over both directions (image to text, text to image)."""
    return (row["utility/i2t_r1"] + row["utility/t2i_r1"]) / 2


def arm(row) -> str:
    """What the job changed: its defense, or its weight decay / epochs where it has none."""
    if row["defense"] != "none":
        return row["defense"]
    return f"none (wd={row['weight_decay']:g}, T={row['epochs']})"


def reference(rows):
    """The undefended target: no defense, the least weight decay and the most epochs of the
    sweep."""
    plain = [r for r in rows if r["defense"] == "none"]
    if not plain:
        return None
    return min(plain, key=lambda r: (r["weight_decay"], -r["epochs"]))


def family(row) -> str:
    if row["defense"] != "none":
        return row["defense"].split("(")[0]
    return (
        "weight_decay"
        if row["weight_decay"] != row["_ref_wd"]
        else "epochs"
        if row["_ref_t"] != row["epochs"]
        else "none"
    )


def _ordered(rows):
    ref = reference(rows)
    for r in rows:
        r["_ref_wd"], r["_ref_t"] = (ref["weight_decay"], ref["epochs"]) if ref else (None, None)
    return ref, sorted(rows, key=lambda r: (r is not ref, family(r), arm(r)))


def table(rows, names) -> list[str]:
    """Markdown: one line per job; Delta AUC is each attack's AUC minus the reference's."""
    ref, rows = _ordered(rows)
    chance = rows[0]["utility/chance_r1"]
    head = (
        ["arm", "epsilon (delta)", "Recall@1 i2t / t2i", "colour acc", "shape acc"]
        + [f"{n} AUC (Δ)" for n in names]
        + [f"{n} TPR@1%" for n in names]
    )
    lines = [
        f"Recall@1 chance: {chance:.4f} (pool of {rows[0]['utility/pool_size']}); colour chance "
        f"{rows[0].get('utility/colour_chance') or float('nan'):.3f}, shape chance "
        f"{rows[0].get('utility/shape_chance') or float('nan'):.3f}. Δ: AUC minus the reference's "
        f"({arm(ref) if ref else 'none'}).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        eps = r.get("privacy/epsilon")
        cells = [
            arm(r) + (" (reference)" if r is ref else ""),
            "" if eps is None else f"{eps:.3g} ({r.get('privacy/delta'):g})",
            f"{r['utility/i2t_r1']:.3f} / {r['utility/t2i_r1']:.3f}",
            _f(r.get("utility/colour_acc")),
            _f(r.get("utility/shape_acc")),
        ]
        for n in names:
            auc, base = r.get(f"{n}/auc"), ref.get(f"{n}/auc") if ref else None
            cells.append(
                ""
                if auc is None
                else f"{auc:.3f}" + ("" if base is None or r is ref else f" ({auc - base:+.3f})")
            )
        cells += [_f(r.get(f"{n}/tpr_at_fpr_1e-2")) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(rows, names, path) -> Path:
    """AUC and TPR@1%FPR of each attack against Recall@1, one marker per job; the reference
    starred."""
    ref, rows = _ordered(rows)
    families = sorted({family(r) for r in rows})
    colours = dict(zip(families, plt.cm.tab10.colors, strict=False))
    markers = dict(zip(names, "osD^v<>", strict=False))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4.8))
    for ax, (metric, title) in zip(axes, METRICS, strict=True):
        for r in rows:
            x = recall1(r)
            for n in names:
                y = r.get(f"{n}/{metric}")
                if y is None:  # an attack this job did not run
                    continue
                ax.scatter(
                    x,
                    y,
                    marker="*" if r is ref else markers[n],
                    s=160 if r is ref else 40,
                    color=colours[family(r)],
                    edgecolor="black" if r is ref else "none",
                    zorder=3,
                )
        ax.axvline(rows[0]["utility/chance_r1"], color="grey", ls=":", lw=1)
        ax.set_xlabel("Recall@1 (mean of image→text and text→image)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    handles = (
        [plt.Line2D([], [], ls="", marker="s", color=colours[f], label=f) for f in families]
        + [plt.Line2D([], [], ls="", marker=markers[n], color="black", label=n) for n in names]
        + [
            plt.Line2D(
                [],
                [],
                ls="",
                marker="*",
                color="white",
                markeredgecolor="black",
                markersize=12,
                label="reference (undefended)",
            ),
            plt.Line2D([], [], ls=":", color="grey", label="Recall@1 chance"),
        ]
    )
    axes[-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle("Leakage against utility, per defense and strength")
    return save(fig, path)


def _f(v, spec=".3f"):
    return "" if v is None else format(v, spec)
