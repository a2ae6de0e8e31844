"""The sweep report as a W&B run (job_type=report) in the sweep's group, beside its jobs' runs."""

from __future__ import annotations

import json
from pathlib import Path

from mia import tracking
from mia.report.rows import columns
from mia.report.stats import point_series


def log_report(sweep_dir, rows, pts, names, plots, rocs):
    """One extra run (job_type=report) in the sweep's group: the jobs' and the points' tables,
    plots, and gap and AUC against N with a band of +-1 sd over training seeds."""
    run = tracking.start(
        rows[0]["_config"],
        sweep_dir,
        job_type="report",
        group=sweep_dir.name,
        name=f"report-{sweep_dir.name}",
    )
    if run is None:
        return
    import wandb

    try:
        payload = {
            "results": _table(rows),
            "points": _table(pts),
            **{f"plots/{k}": wandb.Image(str(p)) for k, p in plots.items()},
            **{f"roc/{Path(p).stem}": wandb.Image(str(p)) for p in rocs},
        }
        for name, series in point_series(pts, "size").items():
            tag = name.split("@")[1]
            for key in ["gap"] + [f"{n}/auc" for n in names]:
                have = [p for p in series if p.get(f"{key}_mean") is not None]
                if len(have) < 2:
                    continue
                mean = [p[f"{key}_mean"] for p in have]
                sd = [p[f"{key}_seed_std"] or 0.0 for p in have]
                payload[f"{key.replace('/', '_')}_vs_N@{tag}"] = wandb.plot.line_series(
                    xs=[p["size"] for p in have],
                    ys=[
                        mean,
                        [m - s for m, s in zip(mean, sd, strict=True)],
                        [m + s for m, s in zip(mean, sd, strict=True)],
                    ],
                    keys=["seed mean", "mean - seed sd", "mean + seed sd"],
                    title=f"{key} vs N ({tag})",
                    xname="N",
                )
        run.log(payload)
    finally:
        run.finish()


def _table(rows):
    import wandb

    cols = columns(rows)
    return wandb.Table(
        columns=cols,
        data=[
            [json.dumps(r.get(k)) if isinstance(r.get(k), list) else r.get(k) for k in cols]
            for r in rows
        ],
    )
