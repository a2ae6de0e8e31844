"""Sweep report: `python -m mia.report <sweep dir>` (or `make report SWEEP=<dir>`).

Reads every results.json under the sweep dir and writes, into it: results.csv (one row per job),
points.csv (one row per condition, pooled over training seeds), report.md, fits.json and PNG plots:
the member / non-member gap against N on log-log axes with its fitted slope (a bootstrap over seeds
and evaluation pairs, over the fitted regime; docs/design.md §6.4) next to the T/N bound, the gap
against T, AUC and TPR@1%FPR against N for every attack with a band over seeds (and the Gaussian
prediction beside CSA), log-log ROC curves per size, OOD-vs-i.i.d. bars per attack, and every
attack's AUC against data.shift beside the blind baseline's (docs/design.md §2.6), and dataset
inference per attack and N with the smallest m that reaches its power target against N
(dataset_inference.csv, m_vs_N.png; §5.1), and the duplicated canaries' AUC per copy count
(canaries.csv, auc_vs_copies.png; §2.9). Where a sweep varies both T and N: the two-factor fit log10
gap = a + alpha log10 T - beta log10 N (fits.json's tn_law) and the gap against T per N and against
N per T (gap_vs_T_by_N.png, gap_vs_N_by_T.png; §6.7). Where jobs can be compared: the overlap of
their most exposed members across seeds and sizes (exposure.json; §6.8). Every attack's seed-mean
AUC and TPRs with intervals, its paired difference from CSA and from its base attack (gradnorm_pure
against gradnorm), and its calibrated TPR (comparison.csv; §6.9). Where some targets train from
scratch and others from pretrained weights: each measure's fine-tuned minus from-scratch difference
paired by seed (finetune.csv, finetune.png; §3.8).

Every metric is also recomputed from each job's scores.parquet and checked against its results.json
(checks.json, and a line of report.md); a disagreement makes the report fail once it is written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from omegaconf import OmegaConf

from mia.report import canaries as canary_report
from mia.report import comparison, exposure, finetune, law, privacy_utility
from mia.report import inference as inference_report
from mia.report.checks import ScoresMismatch, check_scores, mismatch_lines
from mia.report.document import report_markdown
from mia.report.figures import (
    plot_attack_vs_n,
    plot_auc_vs_shift,
    plot_cosines_vs_n,
    plot_gap,
    plot_gap_grid,
    plot_ood_vs_iid,
    plot_rocs,
)
from mia.report.fits import fits
from mia.report.rows import attacks_of, load_rows, reference, write_csv
from mia.report.stats import IDENTITY, bootstrap_settings, points, steps, t_interval
from mia.report.wandb_log import log_report


def build_report(sweep_dir, wandb_log: bool = True) -> Path:
    """Write the sweep's report into `sweep_dir` (the files above) and return report.md's path;
    raise ScoresMismatch, once everything is written, where a results.json disagrees with its
    scores.parquet."""
    sweep_dir = Path(sweep_dir)
    rows = load_rows(sweep_dir)
    names = attacks_of(rows)
    write_csv(rows, sweep_dir / "results.csv")
    checks = check_scores(rows)
    n_bootstrap, seed = bootstrap_settings(rows)
    pts = points(rows, n_bootstrap, seed)
    fit_results = fits(pts, n_bootstrap, seed)
    grids = law.grids(pts)
    setting = law.settings(rows[0]["_config"])
    law_results = {name: law.fit_law(ps, n_bootstrap, seed, setting) for name, ps in grids.items()}
    exposed = exposure.analyse(rows, seed=seed)
    compared = comparison.comparison_rows(pts, names, n_bootstrap, seed)
    family = comparison.adjust(pts, compared)  # before the CSVs: they carry the adjusted p
    write_csv(pts, sweep_dir / "points.csv")
    if compared:
        write_csv(compared, sweep_dir / comparison.FILENAME)
    plots = {
        "gap_vs_N": plot_gap(pts, fit_results, "size", sweep_dir / "gap_vs_N.png"),
        "gap_vs_T": plot_gap(pts, fit_results, "epochs", sweep_dir / "gap_vs_T.png"),
        "cos_vs_N": plot_cosines_vs_n(pts, sweep_dir / "cos_vs_N.png"),
        "auc_vs_N": plot_attack_vs_n(pts, "auc", sweep_dir / "auc_vs_N.png"),
        "tpr_vs_N": plot_attack_vs_n(pts, "tpr_at_fpr_1e-2", sweep_dir / "tpr_vs_N.png"),
        "ood_vs_iid": plot_ood_vs_iid(rows, sweep_dir / "ood_vs_iid.png"),
        "auc_vs_shift": plot_auc_vs_shift(rows, sweep_dir / "auc_vs_shift.png"),
    }
    for i, (name, ps) in enumerate(grids.items()):  # numbered where there are several grids
        for x, stem in (("epochs", "gap_vs_T_by_N"), ("size", "gap_vs_N_by_T")):
            stem += f"_{i}" if len(grids) > 1 else ""
            plots[stem] = plot_gap_grid(ps, law_results[name], x, sweep_dir / f"{stem}.png")
    if privacy_utility.applies(rows):
        plots["privacy_utility"] = privacy_utility.plot(
            rows, names, sweep_dir / "privacy_utility.png"
        )
    ft_rows = finetune.finetune_rows(rows, reference(rows)) if finetune.applies(rows) else []
    if ft_rows:
        write_csv(ft_rows, sweep_dir / finetune.FILENAME)
        plots["finetune"] = finetune.plot(ft_rows, sweep_dir / "finetune.png")
    di_rows = inference_report.inference_rows(rows)
    if di_rows:
        write_csv(di_rows, sweep_dir / inference_report.FILENAME)
    plots["m_vs_N"] = inference_report.plot_m_vs_n(
        di_rows, sweep_dir / "m_vs_N.png", reference(rows)
    )
    c_rows = canary_report.canary_rows(rows)
    if c_rows:
        write_csv(c_rows, sweep_dir / canary_report.FILENAME)
    plots["auc_vs_copies"] = canary_report.plot_auc_vs_copies(
        c_rows, sweep_dir / "auc_vs_copies.png", reference(rows)
    )
    plots = {k: v for k, v in plots.items() if v is not None}
    rocs = plot_rocs(rows, sweep_dir)

    md = report_markdown(
        sweep_dir.name,
        rows,
        pts,
        names,
        compared=compared,
        family=family,
        fit_results=fit_results,
        law_results=law_results,
        di_rows=di_rows,
        c_rows=c_rows,
        exposed=exposed,
        checks=checks,
        plots=plots,
        rocs=rocs,
        ft_rows=ft_rows,
    )
    path = sweep_dir / "report.md"
    path.write_text(md)
    (sweep_dir / "fits.json").write_text(json.dumps({**fit_results, **law_results}, indent=1))
    if exposed is not None:
        (sweep_dir / exposure.FILENAME).write_text(json.dumps(exposed, indent=1))
    (sweep_dir / "checks.json").write_text(json.dumps({"scores": checks}, indent=1))
    if wandb_log:
        log_report(sweep_dir, rows, pts, names, plots, rocs)
    print(f"report: {path}")
    if not checks["agree"]:
        raise ScoresMismatch(
            f"{sweep_dir}: metrics recomputed from scores.parquet disagree with results.json "
            "(checks.json):\n" + "\n".join(mismatch_lines(checks))
        )
    return path


def rebuild_law(report_dir) -> Path:
    """Refit the two-factor law of a written report from its points.csv (results.csv gives the
    figures' seed dots), without the jobs: no bootstrap, as the cells' seed means and spread are all
    the fit needs. Settings from its multirun.yaml's config (train.batch_size, analysis.law, or
    law.DEFAULTS). Rewrites fits.json's law entries (their equal-steps ratios kept as written: the
    intervals need the jobs' cosines), report.md's section on them and the two grid figures;
    returns report.md's path."""
    report_dir = Path(report_dir)
    pts, jobs = (_read_csv(report_dir / name) for name in ("points.csv", "results.csv"))
    config = OmegaConf.to_container(OmegaConf.load(report_dir / "multirun.yaml"))
    for r in pts + jobs:  # written before targets could start from other weights
        r.setdefault("init", "scratch")
    for p in pts:
        # a points.csv written before these columns, or by jobs whose config lacks the batch size
        if p.get("steps") is None:
            p["steps"] = steps(p["epochs"], p["size"], config)
        if p.get("gap_seed_ci") is None:  # the same t interval, from the seeds' sd
            p["gap_seed_ci"] = t_interval(p["gap_mean"], p["gap_seed_std"], p["n_seeds"])
        # the figures' seed dots
        p["_cos"], p["_rows"] = None, [r for r in jobs if all(r[k] == p[k] for k in IDENTITY)]
    grids = law.grids(pts)
    law_results = {
        name: law.fit_law(ps, 0, setting=law.settings(config)) for name, ps in grids.items()
    }
    for i, (name, ps) in enumerate(grids.items()):
        for x, stem in (("epochs", "gap_vs_T_by_N"), ("size", "gap_vs_N_by_T")):
            stem += f"_{i}" if len(grids) > 1 else ""
            plot_gap_grid(ps, law_results[name], x, report_dir / f"{stem}.png")
    fits_path = report_dir / "fits.json"
    written = json.loads(fits_path.read_text())
    for name, fit in law_results.items():
        ratios = written.get(name, {}).get("equal_steps", [])
        if any(e["ratio_ci95"][0] is not None for e in ratios):  # intervals need the cosines
            for e in ratios:
                e["both_fitted"] = {
                    (e[k]["epochs"], e[k]["size"]) for k in ("more_epochs", "fewer_epochs")
                } <= law.fitted(fit)
            fit["equal_steps"] = ratios
    kept = {k: v for k, v in written.items() if not k.startswith(law.KEY)}
    fits_path.write_text(json.dumps({**kept, **law_results}, indent=1))
    path = report_dir / "report.md"
    lines = path.read_text().split("\n")
    head = law.markdown(law_results)[0]
    start = lines.index(head)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    path.write_text("\n".join(lines[:start] + law.markdown(law_results) + [""] + lines[end:]))
    return path


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: _cell_value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _cell_value(text: str):
    """A points.csv cell as the report wrote it: empty is None, JSON where it parses (numbers,
    lists, booleans as True / False), else the text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
