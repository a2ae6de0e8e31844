"""Sweep report: `python -m mia.report <sweep dir>` (or `make report SWEEP=<dir>`).

Reads every results.json under the sweep dir and writes, into it: results.csv, report.md and PNG
plots: the member / non-member gap against N on log-log axes with its fitted slope next to the
T/N bound, the gap against T, AUC and TPR@1%FPR against N for every attack (with the Gaussian
prediction beside CSA), log-log ROC curves per size, OOD-vs-i.i.d. bars per attack, and every
attack's AUC against data.shift beside the blind baseline's (docs/design.md §2.6).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from hydra.experimental.callback import Callback

from mia import metrics, results, tracking
from mia.plots import _save, plt, roc_loglog

log = logging.getLogger(__name__)


def load_rows(sweep_dir) -> list[dict]:
    """One flat row per job, sorted by shift (i.i.d. first, ood / audit last), condition, epochs and size."""
    rows = [results.report_row(results.load(path), str(path.parent.relative_to(sweep_dir)))
            for path in sorted(Path(sweep_dir).rglob("results.json"))]
    if not rows:
        raise FileNotFoundError(f"no results.json under {sweep_dir}")
    return sorted(rows, key=lambda r: (r["shift"] is None, r["shift"] or 0.0, r["nonmembers"], r["epochs"],
                                       r["size"]))


def attacks_of(rows) -> list[str]:
    names = {k.split("/")[0] for r in rows for k in r if k.endswith("/auc")}
    return sorted(names, key=lambda n: (n != "csa", n))


def columns(rows) -> list[str]:
    """The table's columns, in first-seen order; `_`-keys are kept for plots only."""
    return [k for k in dict.fromkeys(k for r in rows for k in r) if not k.startswith("_")]


def write_csv(rows, path):
    keys = columns(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: r.get(k) for k in keys} for r in rows])


def _series(rows, x, fixed):
    """Rows of the i.i.d. condition grouped by the held-fixed variable, sorted by x, one per x."""
    groups = defaultdict(dict)
    for r in rows:
        if r["nonmembers"] == "iid":
            groups[r[fixed]][r[x]] = r
    return {k: [v[x_] for x_ in sorted(v)] for k, v in sorted(groups.items()) if len(v) >= 2}


def _fit_key(x, value) -> str:
    """'gap_vs_N@T=40' / 'gap_vs_T@N=4000': names a fit in fits.json, report.md and the plot."""
    return f"gap_vs_N@T={value}" if x == "size" else f"gap_vs_T@N={value}"


def fits(rows) -> dict:
    """log10 gap on log10 N at each fixed T, and on log10 T at each fixed N (docs/design.md §6)."""
    out = {}
    for x, fixed, expected in (("size", "epochs", -1.0), ("epochs", "size", 1.0)):
        for value, series in _series(rows, x, fixed).items():
            try:
                fit = metrics.fit_loglog([r[x] for r in series], [r["gap_value"] for r in series])
            except ValueError as err:
                fit = {"error": str(err)}
            out[_fit_key(x, value)] = {**fit, "expected_slope": expected}
    return out


def plot_gap(rows, fit_results, x, path):
    fixed = "epochs" if x == "size" else "size"
    series = _series(rows, x, fixed)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for value, rs in series.items():
        xs = np.array([r[x] for r in rs], float)
        gaps = np.array([r["gap_value"] for r in rs])
        err = np.array([[g - r["gap_ci_lo"], r["gap_ci_hi"] - g] for g, r in zip(gaps, rs)]).T
        pos = gaps > 0
        label = f"{'T' if fixed == 'epochs' else 'N'}={value}"
        ax.errorbar(xs[pos], gaps[pos], yerr=np.clip(err[:, pos], 0, None), fmt="o", capsize=3, label=label)
        fit = fit_results.get(_fit_key(x, value), {})
        if "slope" in fit:
            grid = np.geomspace(xs.min(), xs.max(), 50)
            lo, hi = fit["slope_ci95"]
            ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
            ax.plot(grid, 10 ** fit["intercept"] * grid ** fit["slope"], "-",
                    label=f"fit: slope {fit['slope']:.2f}{ci}")
            ref = fit["expected_slope"]  # a fit has >= 2 positive gaps: anchor the reference at the first
            ax.plot(grid, gaps[pos][0] * (grid / xs[pos][0]) ** ref, "k--", lw=0.8,
                    label=f"slope {ref:+.0f} (T/N bound)")
    ax.set(xscale="log", yscale="log", xlabel="training-set size N" if x == "size" else "epochs T",
           ylabel="gap: mean cos(member) - mean cos(non-member)",
           title="member / non-member gap (95% bootstrap CI)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_attack_vs_n(rows, metric, path):
    iid = [r for r in rows if r["nonmembers"] == "iid"]
    sizes = sorted({r["size"] for r in iid})
    if len(sizes) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in attacks_of(iid):
        pts = sorted((r["size"], r.get(f"{name}/{metric}"), r.get(f"{name}/auc_std")) for r in iid
                     if r.get(f"{name}/{metric}") is not None)
        xs, ys, sd = zip(*pts)
        if metric == "auc":
            ax.errorbar(xs, ys, yerr=sd, marker="o", capsize=3, label=name)
        else:
            ax.plot(xs, ys, marker="o", label=name)
    if metric == "auc":
        pts = sorted((r["size"], r["gap_gaussian_auc"]) for r in iid)
        ax.plot(*zip(*pts), "k:", marker="x", label="Gaussian prediction from the gap (CSA)")
        ax.axhline(0.5, color="gray", lw=0.8)
    ax.set(xscale="log", xlabel="training-set size N", ylabel="AUC" if metric == "auc" else "TPR at 1% FPR",
           title=f"{'AUC' if metric == 'auc' else 'TPR@1%FPR'} vs N (i.i.d. non-members)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_rocs(rows, out_dir) -> list[Path]:
    """The jobs' log-log ROCs side by side in the sweep folder, named by condition."""
    return [roc_loglog({name: (c["fpr"], c["tpr"]) for name, c in r["_roc"].items()},
                       Path(out_dir) / f"roc_N{r['size']}_T{r['epochs']}_{r['nonmembers']}.png",
                       f"ROC, N={r['size']}, T={r['epochs']}, {r['nonmembers']}")
            for r in rows if r["_roc"]]


def plot_ood_vs_iid(rows, path):
    by = {(r["nonmembers"], r["size"], r["epochs"]): r for r in rows}
    pair = next(((by[("iid", n, t)], by[("ood", n, t)]) for (c, n, t) in by
                 if c == "iid" and ("ood", n, t) in by), None)
    if pair is None:
        return None
    iid, ood = pair
    names = [n for n in attacks_of([iid]) if f"{n}/auc" in ood]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 4))
    for off, r, label in ((-0.2, iid, "i.i.d. non-members"), (0.2, ood, "OOD non-members")):
        ax.bar(x + off, [r[f"{n}/auc"] for n in names], 0.4, yerr=[r[f"{n}/auc_std"] for n in names],
               capsize=3, label=label)
    ax.axhline(0.5, color="k", lw=0.8)
    ax.set(xticks=x, xticklabels=names, ylim=(0, 1.05), ylabel="AUC",
           title=f"same target (N={iid['size']}, T={iid['epochs']}): i.i.d. vs OOD non-members")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _shift_series(rows) -> dict:
    """{(N, T, shifted parts): rows by increasing shift} for every target and parts a sweep shifts
    at two values or more. A shift-0 job (the i.i.d. one, whatever its parts) joins every series."""
    shifted = [r for r in rows if r["shift"] is not None]
    out = {}
    for n, t, parts in sorted({(r["size"], r["epochs"], r["shift_parts"]) for r in shifted if r["shift"] > 0}):
        points = {}
        for r in shifted:
            if (r["size"], r["epochs"]) == (n, t) and (r["shift"] == 0 or r["shift_parts"] == parts):
                points.setdefault(r["shift"], r)
        if len(points) >= 2:
            out[(n, t, parts)] = [points[s] for s in sorted(points)]
    return out


def plot_auc_vs_shift(rows, path):
    """Every attack's AUC (bootstrap std as error bars) against data.shift, one panel per target and
    shifted parts; the caption-only blind baseline in black, dashed: what the shift alone buys."""
    series = _shift_series(rows)
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(6.5 * len(series), 4.5), squeeze=False)
    for ax, ((n, t, parts), rs) in zip(axes[0], series.items()):
        for name in attacks_of(rs):
            pts = [(r["shift"], r[f"{name}/auc"], r[f"{name}/auc_std"]) for r in rs if r.get(f"{name}/auc") is not None]
            xs, ys, sd = zip(*pts)
            style = dict(color="k", ls="--", lw=2, marker="s", label=f"{name} (captions only, no model)") \
                if name == results.BLIND else dict(marker="o", label=name)
            ax.errorbar(xs, ys, yerr=sd, capsize=3, **style)
        ax.axhline(0.5, color="gray", lw=0.8)
        ax.set(xlabel=f"data.shift: P(a non-member's part is swapped), parts {parts.replace('+', ', ')}",
               ylabel="AUC", title=f"AUC vs distribution shift (N={n}, T={t})")
        ax.legend(fontsize=8)
    return _save(fig, path)


def _md_shift(rows, names) -> list[str]:
    """report.md's lines on each shift series: one row per shift value, every attack's AUC ± std."""
    md = []
    for (n, t, parts), rs in _shift_series(rows).items():
        head = ["shift"] + [n_ for n_ in names if any(r.get(f"{n_}/auc") is not None for r in rs)]
        md += [f"## AUC against the shift (data.shift; swapped parts: {parts.replace('+', ', ')}; N={n}, T={t})", "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rs:
            cells = [f"{r['shift']:g}"] + [f"{r[f'{a}/auc']:.3f} ± {r[f'{a}/auc_std']:.3f}"
                                           if r.get(f"{a}/auc") is not None else "" for a in head[1:]]
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
    return md


def _md_minus_blind(rows, names):
    """The table of attack AUC minus the same job's blind AUC, or None if no job ran blind."""
    names = [n for n in names if any(f"{n}/auc_minus_blind" in r for r in rows)]
    rows = [r for r in rows if any(f"{n}/auc_minus_blind" in r for n in names)]
    if not rows:
        return None
    head = ["N", "T", "non-members"] + names
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["size"]), str(r["epochs"]), r["nonmembers"]]
        cells += [f"{r[f'{n}/auc_minus_blind']:+.3f}" if f"{n}/auc_minus_blind" in r else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _md_table(rows, names):
    head = ["N", "T", "non-members", "gap [95% CI]", "Gaussian AUC"] + [f"{n} AUC" for n in names] + \
           [f"{n} TPR@1%" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["size"]), str(r["epochs"]), r["nonmembers"],
                 f"{r['gap_value']:.4f} [{r['gap_ci_lo']:.4f}, {r['gap_ci_hi']:.4f}]", f"{r['gap_gaussian_auc']:.3f}"]
        cells += [f"{r[f'{n}/auc']:.3f} ± {r[f'{n}/auc_std']:.3f}" if r.get(f"{n}/auc") is not None else "" for n in names]
        cells += [f"{r[f'{n}/tpr_at_fpr_1e-2']:.3f}" if r.get(f"{n}/auc") is not None else "" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_report(sweep_dir, wandb_log: bool = True) -> Path:
    sweep_dir = Path(sweep_dir)
    rows = load_rows(sweep_dir)
    names = attacks_of(rows)
    write_csv(rows, sweep_dir / "results.csv")
    fit_results = fits(rows)
    plots = {
        "gap_vs_N": plot_gap(rows, fit_results, "size", sweep_dir / "gap_vs_N.png"),
        "gap_vs_T": plot_gap(rows, fit_results, "epochs", sweep_dir / "gap_vs_T.png"),
        "auc_vs_N": plot_attack_vs_n(rows, "auc", sweep_dir / "auc_vs_N.png"),
        "tpr_vs_N": plot_attack_vs_n(rows, "tpr_at_fpr_1e-2", sweep_dir / "tpr_vs_N.png"),
        "ood_vs_iid": plot_ood_vs_iid(rows, sweep_dir / "ood_vs_iid.png"),
        "auc_vs_shift": plot_auc_vs_shift(rows, sweep_dir / "auc_vs_shift.png"),
    }
    plots = {k: v for k, v in plots.items() if v is not None}
    rocs = plot_rocs(rows, sweep_dir)

    md = [f"# Sweep report: {sweep_dir.name}", "", f"{len(rows)} jobs; attacks: {', '.join(names)}.", "",
          _md_table(rows, names), ""] + _md_shift(rows, names)
    minus_blind = _md_minus_blind(rows, [n for n in names if n != results.BLIND])
    if minus_blind:
        md += ["## AUC minus blind AUC", "",
               "Each attack's AUC minus the caption-only blind baseline's AUC in the same job: the part of "
               "its signal that the member / non-member distribution shift alone does not explain.", "",
               minus_blind, ""]
    md += ["## Scaling fits (OLS of log10 gap)", ""]
    for name, fit in fit_results.items():
        if "error" in fit:
            md.append(f"- **{name}**: no fit ({fit['error']})")
            continue
        lo, hi = fit["slope_ci95"]
        ci = f"95% CI [{lo:.2f}, {hi:.2f}]" if lo is not None else "no interval with 2 points"
        md.append(f"- **{name}**: slope {fit['slope']:.3f} ({ci}), intercept {fit['intercept']:.3f}, "
                  f"{fit['n_points']} points; the T/N bound predicts about {fit['expected_slope']:+.0f}")
        for ex in fit["excluded"]:
            md.append(f"  - excluded x={ex['x']:g}, gap={ex['y']:.4g}: {ex['reason']} (no logarithm)")
    if not fit_results:
        md.append("No series with at least two values of N (or T) in the i.i.d. condition: nothing to fit.")
    md += ["", "## Plots", ""] + [f"![{k}]({Path(p).name})" for k, p in plots.items()] + \
          [f"![roc]({Path(p).name})" for p in rocs]
    path = sweep_dir / "report.md"
    path.write_text("\n".join(md) + "\n")
    (sweep_dir / "fits.json").write_text(json.dumps(fit_results, indent=1))
    if wandb_log:
        _log_wandb(sweep_dir, rows, names, plots, rocs)
    print(f"report: {path}")
    return path


def _log_wandb(sweep_dir, rows, names, plots, rocs):
    """One extra run (job_type=report) in the sweep's group: table, plots, gap and AUC vs N charts."""
    run = tracking.start(rows[0]["_config"], sweep_dir, job_type="report", group=sweep_dir.name,
                         name=f"report-{sweep_dir.name}")
    if run is None:
        return
    import wandb

    try:
        cols = columns(rows)
        table = wandb.Table(columns=cols, data=[[r.get(k) for k in cols] for r in rows])
        payload = {"results": table, **{f"plots/{k}": wandb.Image(str(p)) for k, p in plots.items()},
                   **{f"roc/{Path(p).stem}": wandb.Image(str(p)) for p in rocs}}
        payload["gap_vs_N"] = wandb.plot.line(table, "size", "gap_value", title="gap vs N")
        for name in names:
            payload[f"{name}_auc_vs_N"] = wandb.plot.line(table, "size", f"{name}/auc", title=f"{name} AUC vs N")
        run.log(payload)
    finally:
        run.finish()


class ReportCallback(Callback):
    """Writes the report when a multirun ends (conf/hydra/default.yaml registers it)."""

    def on_multirun_end(self, config, **kwargs):
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            build_report(sweep_dir)
        except FileNotFoundError as err:  # every job failed before writing results
            log.warning("%s: no report", err)
        except Exception:  # the jobs' results are safe on disk; `python -m mia.report` can retry
            log.exception("sweep report failed; rerun: python -m mia.report %s", sweep_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. outputs/multiruns/<stamp>")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report run to W&B")
    args = parser.parse_args(argv)
    build_report(args.sweep_dir, wandb_log=not args.no_wandb)


if __name__ == "__main__":
    main()
