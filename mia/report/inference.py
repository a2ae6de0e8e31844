"""The sweep report's dataset-inference section (docs/design.md §5.1): each job's own result
(results.json's `analysis.dataset_inference`), recomputed from its scores.parquet with its settings
only where results.json lacks it, a table per attack and N, and the smallest m reaching the power
target against N."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from mia.evaluation import scores
from mia.evaluation.dataset_inference import dataset_inference
from mia.plots import plt, save
from mia.report.rows import attack_order, scores_table

FILENAME = "dataset_inference.csv"


def _settings(config: dict) -> dict | None:
    """The job's own settings, or None where it turned dataset inference off."""
    di = config["analysis"]["dataset_inference"]
    return di if di["enabled"] else None


def inference_rows(rows) -> list[dict]:
    """One row per (job, attack): the power target's smallest m, the non-member sets' flag rate, and
    the power at every m; none for a job whose scores.parquet failed the check."""
    out = []
    for r in rows:
        df, settings = scores_table(r), _settings(r["_config"])
        if df is None or settings is None:
            continue
        member = df["label"].to_numpy() == 1
        stored = r["_results"].get("analysis", {}).get("dataset_inference", {})
        for attack in scores.attack_columns(df):
            x = df[attack].to_numpy()
            # the job ran it on these very scores; a rerun costs minutes per attack at K = 5k
            di = stored.get(attack) or dataset_inference(
                x[member], x[~member], settings, seed=r["seed"]
            )
            out.append(
                {
                    "job": r["job"],
                    "size": r["size"],
                    "epochs": r["epochs"],
                    "nonmembers": r["nonmembers"],
                    "model": r["model"],
                    "params": r["params"],
                    "seed": r["seed"],
                    "attack": attack,
                    "auc": di["auc"],
                    "smallest_m": di["smallest_m"],
                    "max_m": di["max_m"],
                    "predicted_m": di["predicted_m"],
                    "fpr": di["fpr"],
                    "fpr_ci_lo": di["fpr_ci95"][0],
                    "fpr_ci_hi": di["fpr_ci95"][1],
                    "fpr_max": di["fpr_max"],
                    "calibrated": di["calibrated"],
                    "alpha": di["alpha"],
                    "power_target": di["power_target"],
                    **{f"power@m={b['m']}": b["power"] for b in di["by_m"]},
                }
            )
    return out


def _m_cell(row) -> str:
    if row["smallest_m"] is not None:
        return str(row["smallest_m"])
    pred = row["predicted_m"]
    return (
        f"> {row['max_m']} (predicted {pred:.0f})"
        if pred is not None
        else f"> {row['max_m']} (none: AUC <= 0.5)"
    )


def markdown(di_rows, first: str | None = None) -> list[str]:
    """report.md's dataset-inference section; `first`: the attack listed first (the sweep's
    reference)."""
    if not di_rows:
        return []
    r0 = di_rows[0]
    md = [
        "## Dataset inference",
        "",
        "Sets of m members, and of m non-members, each tested against the other evaluation "
        f"non-members with a one-sided Mann-Whitney U test at alpha = {r0['alpha']:g} "
        f"(docs/design.md §5.1). *m for {r0['power_target']:.0%} power*: the smallest m of the "
        "grid whose member sets are flagged at least that often; past the grid, the m Noether's "
        "approximation predicts from the AUC with unlimited known non-members. *non-member FPR*: "
        "how often non-member sets were flagged, pooled over the grid, with its 95% interval; "
        "*calibrated*: at most alpha, and no single m significantly above it.",
        "",
        "| N | T | non-members | seed | attack | AUC | m for power | non-member FPR (95% CI) | "
        "max over m | calibrated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(
        di_rows,
        key=lambda r: (
            r["nonmembers"],
            r["epochs"],
            *attack_order(r["attack"], first),
            r["size"],
            r["seed"],
        ),
    ):
        md.append(
            f"| {r['size']} | {r['epochs']} | {r['nonmembers']} | {r['seed']} | {r['attack']} | "
            f"{r['auc']:.3f} | {_m_cell(r)} | {r['fpr']:.4f} "
            f"({r['fpr_ci_lo']:.4f}-{r['fpr_ci_hi']:.4f}) | {r['fpr_max']:.4f} | "
            f"{'yes' if r['calibrated'] else 'no'} |"
        )
    bad = [r for r in di_rows if not r["calibrated"]]
    md += [
        "",
        f"Non-member sets calibrated in {len(di_rows) - len(bad)} of {len(di_rows)} (job, attack) "
        "pairs"
        + (": not in " + ", ".join(f"{r['job']}/{r['attack']}" for r in bad) if bad else "."),
    ]
    return md


def plot_m_vs_n(di_rows, path, first: str | None = None):
    """The smallest m reaching the power target against N per attack (i.i.d. non-members), median
    over seeds; hollow markers where the grid never reached it and the value is Noether's
    prediction."""
    series = defaultdict(lambda: defaultdict(list))
    for r in di_rows:
        if r["nonmembers"] != "iid":
            continue
        m = r["smallest_m"] if r["smallest_m"] is not None else r["predicted_m"]
        if m is not None:
            series[(r["attack"], r["epochs"])][r["size"]].append((m, r["smallest_m"] is None))
    series = {k: v for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    tagged = len({t for _, t in series}) > 1
    for i, ((attack, t), by_n) in enumerate(
        sorted(series.items(), key=lambda kv: (*attack_order(kv[0][0], first), kv[0][1]))
    ):
        ns = sorted(by_n)
        ms = [float(np.median([m for m, _ in by_n[n]])) for n in ns]
        predicted = [any(p for _, p in by_n[n]) for n in ns]
        colour = f"C{i % 10}"
        ax.plot(ns, ms, color=colour, label=f"{attack}" + (f" (T={t})" if tagged else ""))
        ax.scatter(
            [n for n, p in zip(ns, predicted, strict=True) if not p],
            [m for m, p in zip(ms, predicted, strict=True) if not p],
            color=colour,
            zorder=3,
        )
        ax.scatter(
            [n for n, p in zip(ns, predicted, strict=True) if p],
            [m for m, p in zip(ms, predicted, strict=True) if p],
            facecolors="none",
            edgecolors=colour,
            zorder=3,
        )
    r0 = di_rows[0]
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training-set size N",
        ylabel=f"smallest m with {r0['power_target']:.0%} power",
        title=f"dataset inference at {r0['alpha']:.0%} FPR (hollow: predicted past the grid)",
    )
    from matplotlib.ticker import ScalarFormatter

    ax.yaxis.set_major_formatter(ScalarFormatter())  # set sizes read as plain numbers
    ax.legend(fontsize=7)
    return save(fig, path)
