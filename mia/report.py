"""Sweep report: `python -m mia.report <sweep dir>` (or `make report SWEEP=<dir>`).

Reads every results.json under the sweep dir and writes, into it: results.csv, report.md and PNG
plots: the member / non-member gap against N on log-log axes with its fitted slope next to the
T/N bound, the gap against T, AUC and TPR@1%FPR against N for every attack (with the Gaussian
prediction beside CSA), log-log ROC curves per size, and OOD-vs-i.i.d. bars per attack.

Every metric is also recomputed from each job's scores.parquet and checked against its results.json
(checks.json, and a line of report.md); a disagreement makes the report fail once it is written.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from hydra.experimental.callback import Callback

from mia import metrics, results, scores, tracking
from mia.data.splits import MEMBER_EVAL
from mia.plots import _save, plt, roc_loglog

log = logging.getLogger(__name__)


def load_rows(sweep_dir) -> list[dict]:
    """One flat row per job, sorted by condition, epochs and size."""
    rows = [results.report_row(results.load(path), str(path.parent.relative_to(sweep_dir)))
            for path in sorted(Path(sweep_dir).rglob("results.json"))]
    if not rows:
        raise FileNotFoundError(f"no results.json under {sweep_dir}")
    return sorted(rows, key=lambda r: (r["nonmembers"], r["epochs"], r["size"]))


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


# Metrics recomputed from scores.parquet: equal to results.json's up to this relative tolerance
# (the same functions on the same float64 values: in practice bit for bit); counts exactly.
RECOMPUTED = ("auc", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "balanced_accuracy")
RECOMPUTED_EXACT = ("n_members", "n_nonmembers")
RECOMPUTED_GAP = ("value", "member_mean", "nonmember_mean")
REL_TOL = 1e-9


class ScoresMismatch(ValueError):
    """results.json and scores.parquet disagree in at least one job (checks.json lists where)."""


def _recompute(job, record, df) -> tuple[list[dict], list[str]]:
    """(mismatches, problems) between one job's results.json and its scores table; both [] when they agree."""
    mismatches, problems = [], []

    def compare(attack, metric, reported, recomputed, exact=False):
        same = reported == recomputed if exact or not isinstance(reported, (int, float)) else \
            math.isclose(reported, recomputed, rel_tol=REL_TOL, abs_tol=0.0)
        if not same:
            mismatches.append({"job": job, "attack": attack, "metric": metric, "results_json": reported,
                               "scores_parquet": recomputed})

    labels = df["label"].to_numpy()
    if not ((labels == 1) == (df["set"] == MEMBER_EVAL).to_numpy()).all():
        problems.append(f"label is not 1 exactly on the {MEMBER_EVAL} rows")
        return mismatches, problems
    cos = df["cos"].to_numpy()
    gap = metrics.gap(cos[labels == 1], cos[labels == 0], n_bootstrap=0)
    for k in RECOMPUTED_GAP:
        compare(None, f"gap.{k}", record["gap"][k], gap[k])
    reported, columns = results.attack_metrics(record), scores.attack_columns(df)
    problems += [f"attack {n} has metrics in results.json and no column in scores.parquet"
                 for n in reported if n not in columns]
    problems += [f"attack {n} has a column in scores.parquet and no metrics in results.json"
                 for n in columns if n not in reported]
    for name in (n for n in reported if n in columns):
        m = metrics.roc_metrics(df[name].to_numpy(), labels, n_bootstrap=0)
        for k in RECOMPUTED + RECOMPUTED_EXACT:
            compare(name, k, reported[name][k], m[k], exact=k in RECOMPUTED_EXACT)
    return mismatches, problems


def check_scores(sweep_dir, rows) -> dict:
    """Recompute every job's metrics from its scores.parquet and compare them with its results.json.
    Jobs that kept no scores (older results) are listed as not checked; a scores file that results.json
    names but that is missing, unreadable or inconsistent is an error."""
    sweep_dir = Path(sweep_dir)
    checked, not_checked, mismatches, errors = [], [], [], []
    for row in rows:
        job = row["job"]
        record = results.load(sweep_dir / job / "results.json")
        path = results.scores_path(record, sweep_dir / job)
        if path is None:
            not_checked.append(job)
            continue
        try:
            found, problems = _recompute(job, record, scores.load(path))
        except Exception as err:  # a missing or broken file (NaN scores, say) fails the check, naming it
            errors.append({"job": job, "error": f"{path}: {type(err).__name__}: {err}"})
            continue
        checked.append(job)
        mismatches += found
        errors += [{"job": job, "error": f"{path}: {p}"} for p in problems]
    return {"rel_tol": REL_TOL, "checked": checked, "not_checked": not_checked, "mismatches": mismatches,
            "errors": errors, "agree": not mismatches and not errors}


def _mismatch_lines(checks) -> list[str]:
    lines = [f"{e['job']}: {e['error']}" for e in checks["errors"]]
    lines += [f"{m['job']}: {m['attack'] + ' ' if m['attack'] else ''}{m['metric']}: results.json "
              f"{m['results_json']!r}, scores.parquet {m['scores_parquet']!r}" for m in checks["mismatches"]]
    return lines


def _checks_md(checks) -> list[str]:
    n = len(checks["checked"])
    md = ["", "## Checks", ""]
    if checks["agree"] and not n:
        md.append("metrics recomputed from scores.parquet: no job kept one, nothing checked")
    elif checks["agree"]:
        md.append(f"metrics recomputed from scores.parquet: {n} jobs, all agree (relative tolerance {REL_TOL:g})")
    else:
        md.append(f"metrics recomputed from scores.parquet: {n} jobs read, "
                  f"{len(checks['mismatches'])} mismatches, {len(checks['errors'])} errors:")
        md += [f"- {line}" for line in _mismatch_lines(checks)]
    if checks["not_checked"]:
        md.append(f"not checked (no scores.parquet): {', '.join(checks['not_checked'])}")
    return md


def build_report(sweep_dir, wandb_log: bool = True) -> Path:
    sweep_dir = Path(sweep_dir)
    rows = load_rows(sweep_dir)
    names = attacks_of(rows)
    write_csv(rows, sweep_dir / "results.csv")
    fit_results = fits(rows)
    checks = check_scores(sweep_dir, rows)
    plots = {
        "gap_vs_N": plot_gap(rows, fit_results, "size", sweep_dir / "gap_vs_N.png"),
        "gap_vs_T": plot_gap(rows, fit_results, "epochs", sweep_dir / "gap_vs_T.png"),
        "auc_vs_N": plot_attack_vs_n(rows, "auc", sweep_dir / "auc_vs_N.png"),
        "tpr_vs_N": plot_attack_vs_n(rows, "tpr_at_fpr_1e-2", sweep_dir / "tpr_vs_N.png"),
        "ood_vs_iid": plot_ood_vs_iid(rows, sweep_dir / "ood_vs_iid.png"),
    }
    plots = {k: v for k, v in plots.items() if v is not None}
    rocs = plot_rocs(rows, sweep_dir)

    md = [f"# Sweep report: {sweep_dir.name}", "", f"{len(rows)} jobs; attacks: {', '.join(names)}.", "",
          _md_table(rows, names), "", "## Scaling fits (OLS of log10 gap)", ""]
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
    md += _checks_md(checks)
    md += ["", "## Plots", ""] + [f"![{k}]({Path(p).name})" for k, p in plots.items()] + \
          [f"![roc]({Path(p).name})" for p in rocs]
    path = sweep_dir / "report.md"
    path.write_text("\n".join(md) + "\n")
    (sweep_dir / "fits.json").write_text(json.dumps(fit_results, indent=1))
    (sweep_dir / "checks.json").write_text(json.dumps({"scores": checks}, indent=1))
    if wandb_log:
        _log_wandb(sweep_dir, rows, names, plots, rocs)
    print(f"report: {path}")
    if not checks["agree"]:
        raise ScoresMismatch(f"{sweep_dir}: metrics recomputed from scores.parquet disagree with results.json "
                             "(checks.json):\n" + "\n".join(_mismatch_lines(checks)))
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
        except ScoresMismatch as err:  # the report is written; the disagreement is the news
            log.error("%s", err)
        except Exception:  # the jobs' results are safe on disk; `python -m mia.report` can retry
            log.exception("sweep report failed; rerun: python -m mia.report %s", sweep_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. outputs/multiruns/<stamp>")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report run to W&B")
    args = parser.parse_args(argv)
    try:
        build_report(args.sweep_dir, wandb_log=not args.no_wandb)
    except ScoresMismatch as err:
        print(err, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
