"""Weights & Biases: one run per job, offline unless logger.mode says otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from mia.cache import config_hash
from mia.evaluation import results, scores, utility

log = logging.getLogger(__name__)

EXPOSED_ROWS = 50  # rows of the exposed_members table
THUMBNAIL_PX = 128  # its images' longest side: a web image at full size would bloat the run


def start(cfg, out_dir: Path, job_type: str = "attack", group: str | None = None, **kwargs):
    """A wandb run, or None with logger=none. `cfg` is the job's config (or its resolved dict, as in
    results.json). The run id is a function of the output folder, so a job started again there (a
    requeued SLURM job, a rerun after a kill, a second `mia.report`) resumes its run."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    if cfg.logger.backend == "none":
        return None
    import wandb

    return wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        mode=cfg.logger.mode,
        group=cfg.logger.group or group or sweep_group(),
        tags=list(cfg.logger.tags),
        job_type=job_type,
        dir=str(out_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
        id=run_id(out_dir),
        resume="allow",
        **kwargs,
    )


def run_id(out_dir: Path) -> str:
    return config_hash(str(Path(out_dir).resolve()), length=12)


def sweep_group():
    """Every job of one multirun shares a W&B group: the sweep folder's name (the report uses it too)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def lightning_logger(run):
    if run is None:
        return None
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(experiment=run)


def log_results(run, record: dict, images: dict):
    """Summary scalars, a log-spaced ROC table per attack, and the plots. Never wandb.plot.roc_curve:
    it rounds FPR to three decimals, which hides the low-FPR regime that matters here."""
    if run is None:
        return
    import wandb

    run.summary.update(summary(record))
    payload = {
        f"roc_table/{name}": wandb.Table(
            columns=["fpr", "tpr"], data=[list(p) for p in zip(c["fpr"], c["tpr"])]
        )
        for name, c in record["roc"].items()
    }
    payload.update({key: wandb.Image(str(path)) for key, path in images.items()})
    run.log(payload)


def summary(record: dict) -> dict:
    """Flat scalars of a job's results.json for its W&B run summary: gap/<key>, <attack>/<metric>,
    <attack>/skipped (why, for an attack the job could not score), target/size, target/cache_hit,
    utility/<key> and privacy/<key>."""
    out = {f"gap/{k}": v for k, v in record["gap"].items() if _scalar(v)}
    for name, m in results.attack_metrics(record).items():
        out.update({f"{name}/{k}": v for k, v in m.items() if _scalar(v)})
    out.update({f"{name}/skipped": why for name, why in results.skipped(record).items()})
    out.update(
        {"target/size": record["target"]["size"], "target/cache_hit": record["target"]["cache_hit"]}
    )
    out.update(utility.summary(record["utility"]))
    out.update(results.privacy_summary(record))
    return out


def _scalar(v) -> bool:
    return isinstance(v, (int, float))


def log_exposed(run, top, images: dict):
    """The `exposed_members` table: the members of `top` (mia.evaluation.scores.most_exposed: highest exposure
    first) with a thumbnail of each pair's image (`images`: {uid: PIL image}), caption, exposure and
    every attack's score."""
    if run is None:
        return
    import wandb

    names = scores.attack_columns(top)
    rows = []
    for _, r in top.iterrows():
        thumb = images[r["uid"]].copy()
        thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        rows.append(
            [r["uid"], wandb.Image(thumb), r["caption"], float(r[scores.EXPOSURE])]
            + [float(r[n]) for n in names]
        )
    run.log(
        {
            "exposed_members": wandb.Table(
                columns=["uid", "thumbnail", "caption", scores.EXPOSURE, *names], data=rows
            )
        }
    )


def finish(run):
    if run is not None:
        run.finish()
