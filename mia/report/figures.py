"""The sweep report's figures: the gap against N and T with its fit, the gap of a T x N grid against
either factor with the two-factor fit, each attack's AUC and TPR@1%FPR against N with a band over
seeds, the gap's two sides against N, log-log ROCs, i.i.d. against OOD non-members, and every
attack's AUC against data.shift. Each writes one PNG and returns its path, or None where the sweep
has nothing to draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mia.plots import plt, roc_loglog, save
from mia.report.fits import left_out
from mia.report.rows import attacks_of, baseline_of
from mia.report.stats import IDENTITY, point_series, shift_series


def plot_gap(pts, fit_results, x, path):
    series = point_series(pts, x)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for name, ps in series.items():
        fit = fit_results[name]
        label = name.split("@")[1]
        for r in (r for p in ps for r in p["_rows"] if r["gap_value"] > 0 and p["n_seeds"] > 1):
            ax.plot(r[x], r["gap_value"], ".", color="gray", ms=4, alpha=0.7)
        for p in ps:
            if p["gap_mean"] <= 0:
                continue
            lo, hi = p["gap_ci"]
            err = None if lo is None else [[p["gap_mean"] - lo], [hi - p["gap_mean"]]]
            inside = left_out(p) is None
            ax.errorbar(
                p[x],
                p["gap_mean"],
                yerr=None if err is None else np.clip(err, 0, None),
                fmt="o",
                capsize=3,
                color="C0",
                mfc="C0" if inside else "white",
            )
        if "slope" in fit:
            xs = np.array(fit["fitted_x"], float)
            grid = np.geomspace(xs.min(), xs.max(), 50)
            lo, hi = fit["slope_ci95"]
            ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
            ax.plot(
                grid,
                10 ** fit["intercept"] * grid ** fit["slope"],
                "-",
                color="C1",
                label=f"{label} fit: slope {fit['slope']:.2f}{ci}",
            )
            ref = fit["expected_slope"]  # anchored at the first fitted point
            first = 10 ** fit["intercept"] * xs.min() ** fit["slope"]
            ax.plot(
                grid,
                first * (grid / xs.min()) ** ref,
                "k--",
                lw=0.8,
                label=f"slope {ref:+.0f} (T/N bound)",
            )
    ax.plot([], [], "o", color="C0", label="seed mean, fitted (95% CI)")
    ax.plot([], [], "o", color="C0", mfc="white", label="seed mean, left out of the fit")
    if any(p["n_seeds"] > 1 for ps in series.values() for p in ps):
        ax.plot([], [], ".", color="gray", label="one training seed")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="training-set size N" if x == "size" else "epochs T",
        ylabel="gap: mean cos(member) - mean cos(non-member)",
        title="member / non-member gap",
    )
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_gap_grid(ps, law, x, path):
    """The gap of a T x N grid (law.grids) against `x` ("epochs" or "size") on log-log axes, one
    line per value of the other factor: seed means with their 95% interval, hollow where left out of
    the fit, each seed as a dot, and the two-factor fit `law` (law.fit_law) dashed in the line's
    colour."""
    other = "size" if x == "epochs" else "epochs"
    name = {"epochs": "T", "size": "N"}
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    out = {(c["epochs"], c["size"]) for c in law.get("excluded", [])}
    for i, v in enumerate(sorted({p[other] for p in ps})):
        colour, line = f"C{i % 10}", [p for p in ps if p[other] == v and p["gap_mean"] > 0]
        if not line:
            continue
        xs = np.array([p[x] for p in line], float)
        ax.plot(
            xs, [p["gap_mean"] for p in line], "-", color=colour, label=f"{name[other]} = {v:g}"
        )
        for p in line:
            lo, hi = p["gap_ci"]
            err = (
                None
                if lo is None
                else np.clip([[p["gap_mean"] - lo], [hi - p["gap_mean"]]], 0, None)
            )
            ax.errorbar(
                p[x],
                p["gap_mean"],
                yerr=err,
                fmt="o",
                capsize=3,
                color=colour,
                mfc="white" if (p["epochs"], p["size"]) in out else colour,
            )
            seeds = [
                r["gap_value"] for r in p["_rows"] if r["gap_value"] > 0
            ]  # a log axis has no room for the rest
            ax.plot([p[x]] * len(seeds), seeds, ".", color=colour, ms=3, alpha=0.5)
        if "alpha" in law:  # the plane's cut at this value of the other factor
            grid = np.geomspace(xs.min(), xs.max(), 50)
            t, n = (grid, v) if x == "epochs" else (v, grid)
            ax.plot(
                grid,
                10 ** law["a"] * np.power(t, law["alpha"]) * np.power(n, -law["beta"]),
                "--",
                color=colour,
                lw=0.9,
            )
    if "alpha" in law:
        ax.plot(
            [], [], "k--", lw=0.9, label=f"fit: alpha {law['alpha']:.2f}, beta {law['beta']:.2f}"
        )
    ax.plot([], [], "o", color="gray", mfc="white", label="left out of the fit")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="epochs T" if x == "epochs" else "training-set size N",
        ylabel="gap: mean cos(member) - mean cos(non-member)",
        title=f"gap against {name[x]}, one line per {name[other]} (95% CI; dots: training seeds)",
    )
    ticks = sorted({p[x] for p in ps})  # the grid's own values, not powers of ten
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.legend(fontsize=7)
    return save(fig, path)


def _band(ax, xs, ps, key, colour, label, style="-"):
    """The points' seed mean of `key` against xs, with a band of +-1 seed sd where there is one."""
    ys = np.array([p[f"{key}_mean"] for p in ps])
    sd = np.array([p.get(f"{key}_seed_std") or 0.0 for p in ps])
    ax.plot(xs, ys, style, marker="o", color=colour, label=label)
    if sd.any():
        ax.fill_between(xs, ys - sd, ys + sd, color=colour, alpha=0.2)


def _size_series(pts):
    """(figure, axes, [(series number, its tag in labels, its points)]) of the points against N, or
    None where there are none."""
    series = point_series(pts, "size")
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    return (
        fig,
        ax,
        [
            (s_no, f" ({name.split('@')[1]})" if len(series) > 1 else "", ps)
            for s_no, (name, ps) in enumerate(series.items())
        ],
    )


def plot_attack_vs_n(pts, metric, path):
    drawn = _size_series(pts)
    if drawn is None:
        return None
    fig, ax, series = drawn
    for s_no, tag, ps in series:
        for a_no, attack in enumerate(attacks_of([r for p in ps for r in p["_rows"]])):
            # a TPR at low FPR only where the non-members resolve it (docs/design.md §5)
            have = [
                p
                for p in ps
                if p.get(f"{attack}/{metric}_mean") is not None
                and p.get(f"{attack}/{metric}_resolved", True)
            ]
            _band(
                ax,
                np.array([p["size"] for p in have], float),
                have,
                f"{attack}/{metric}",
                f"C{(a_no + 3 * s_no) % 10}",
                f"{attack}{tag}",
            )
        if metric == "auc":
            ax.plot(
                [p["size"] for p in ps],
                [p["gaussian_auc"] for p in ps],
                "k:",
                marker="x",
                label=f"Gaussian prediction from the gap{tag}",
            )
    if metric == "auc":
        ax.axhline(0.5, color="gray", lw=0.8)
    seeds = max(p["n_seeds"] for _, _, ps in series for p in ps)
    band = f"; band: +-1 sd over {seeds} training seeds" if seeds > 1 else ""
    ax.set(
        xscale="log",
        xlabel="training-set size N",
        ylabel="AUC" if metric == "auc" else "TPR at 1% FPR",
        title=f"{'AUC' if metric == 'auc' else 'TPR@1%FPR'} vs N, i.i.d. non-members{band}"
        + ("" if metric == "auc" else "\n(points with < 10 false positives allowed left out)"),
    )
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_cosines_vs_n(pts, path):
    """Mean member and non-member cosine against N: whether the gap closes because members are
    fitted less tightly (capacity) or because non-members are matched better (generalisation)."""
    drawn = _size_series(pts)
    if drawn is None:
        return None
    fig, ax, series = drawn
    for s_no, tag, ps in series:
        xs = np.array([p["size"] for p in ps], float)
        for side, style in (("member", "-"), ("nonmember", "--")):
            _band(
                ax, xs, ps, f"{side}_cos", f"C{s_no}", f"{side.replace('non', 'non-')}s{tag}", style
            )
    ax.set(
        xscale="log",
        xlabel="training-set size N",
        ylabel="mean cosine of the evaluation pairs",
        title="the gap's two sides against N (i.i.d. non-members)",
    )
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_rocs(rows, out_dir) -> list[Path]:
    """The jobs' log-log ROCs side by side in the sweep folder, named by condition; one seed per
    condition (the lowest), since seeds' curves overlap."""
    first = {}
    for r in rows:
        first.setdefault(tuple(r[k] for k in IDENTITY), r)
    arms = (
        len({(r["defense"], r["weight_decay"]) for r in rows}) > 1
    )  # name the arm, or arms overwrite each other

    def arm(r):
        return (
            "_"
            + "".join(
                c if c.isalnum() or c in "._=" else "_"
                for c in f"{r['defense']}_wd{r['weight_decay']}"
            )
            if arms
            else ""
        )

    return [
        roc_loglog(
            {name: (c["fpr"], c["tpr"]) for name, c in r["_roc"].items()},
            Path(out_dir) / f"roc_N{r['size']}_T{r['epochs']}_{r['nonmembers']}{arm(r)}.png",
            f"ROC, N={r['size']}, T={r['epochs']}, {r['nonmembers']}, seed {r['seed']}"
            + (f", {r['defense']}, wd={r['weight_decay']}" if arms else ""),
        )
        for r in first.values()
        if r["_roc"]
    ]


def plot_ood_vs_iid(rows, path):
    by = {(r["nonmembers"], r["size"], r["epochs"]): r for r in rows}
    pair = next(
        (
            (by[("iid", n, t)], by[("ood", n, t)])
            for (c, n, t) in by
            if c == "iid" and ("ood", n, t) in by
        ),
        None,
    )
    if pair is None:
        return None
    iid, ood = pair
    names = [n for n in attacks_of([iid]) if f"{n}/auc" in ood]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 4))
    for off, r, label in ((-0.2, iid, "i.i.d. non-members"), (0.2, ood, "OOD non-members")):
        ax.bar(
            x + off,
            [r[f"{n}/auc"] for n in names],
            0.4,
            yerr=[r[f"{n}/auc_std"] for n in names],
            capsize=3,
            label=label,
        )
    ax.axhline(0.5, color="k", lw=0.8)
    ax.set(
        xticks=x,
        xticklabels=names,
        ylim=(0, 1.05),
        ylabel="AUC",
        title=f"same target (N={iid['size']}, T={iid['epochs']}): i.i.d. vs OOD non-members",
    )
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_auc_vs_shift(rows, path):
    """Every attack's AUC (bootstrap std as error bars) against data.shift, one panel per target and
    shifted parts; the caption-only blind baseline in black, dashed: what the shift alone buys."""
    series, base = shift_series(rows), baseline_of(rows)
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(6.5 * len(series), 4.5), squeeze=False)
    for ax, ((n, t, parts), rs) in zip(axes[0], series.items(), strict=True):
        for name in attacks_of(rs):
            pts = [
                (r["shift"], r[f"{name}/auc"], r[f"{name}/auc_std"])
                for r in rs
                if r.get(f"{name}/auc") is not None
            ]
            xs, ys, sd = zip(*pts, strict=True)
            style = (
                dict(
                    color="k", ls="--", lw=2, marker="s", label=f"{name} (captions only, no model)"
                )
                if name == base
                else dict(marker="o", label=name)
            )
            ax.errorbar(xs, ys, yerr=sd, capsize=3, **style)
        ax.axhline(0.5, color="gray", lw=0.8)
        ax.set(
            xlabel=(
                f"data.shift: P(a non-member's part is swapped), parts {parts.replace('+', ', ')}"
            ),
            ylabel="AUC",
            title=f"AUC vs distribution shift (N={n}, T={t})",
        )
        ax.legend(fontsize=8)
    return save(fig, path)
