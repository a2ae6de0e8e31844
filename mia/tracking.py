"""Weights & Biases: one run per job, offline unless logger.mode says otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import OmegaConf

from mia.cache import config_hash
from mia.evaluation import results, scores, utility
from mia.validate import build, require

log = logging.getLogger(__name__)

EXPOSED_ROWS = 50  # rows of the exposed_members table
THUMBNAIL_PX = 128  # its images' longest side: a web image at full size would bloat the run


class NoTracking:
    """logger=none: no W&B run."""

    def start(self, config: dict, out_dir: Path, job_type: str = "attack", group=None, **kwargs):
        return None


class Wandb:
    """logger=wandb: one W&B run per job, in `mode` (offline: `wandb sync` it later)."""

    MODES = ("offline", "online", "disabled")

    def __init__(self, *, project="mia", entity=None, mode="offline", group=None, tags=()):
        require(mode in self.MODES, "logger.mode", mode, f"choose one of {', '.join(self.MODES)}")
        require(
            isinstance(project, str) and bool(project), "logger.project", project, "must be a name"
        )
        require(
            isinstance(tags, (list, tuple)) and all(isinstance(t, str) for t in tags),
            "logger.tags",
            tags,
            "must be a list of strings",
        )
        self.project, self.entity, self.mode, self.group = project, entity, mode, group
        self.tags = list(tags)

    def start(self, config: dict, out_dir: Path, job_type: str = "attack", group=None, **kwargs):
        """The run of the job whose resolved config is `config`. Its id is a function of the output
        folder, so a job started again there (a requeued SLURM job, a rerun after a kill, a second
        `mia.report`) resumes its run."""
        import wandb

        return wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            group=self.group or group or sweep_group(),
            tags=self.tags,
            job_type=job_type,
            dir=str(out_dir),
            config=config,
            id=run_id(out_dir),
            resume="allow",
            **kwargs,
        )


# results.json of jobs run before the logger group named its class: {"backend": ..., settings}
_BACKENDS = {"none": NoTracking, "wandb": Wandb}


def tracker(node):
    """The `logger` group built (its `_target_`), refused naming logger.<key>; a recorded config
    whose logger names a `backend` instead is read as that backend's class."""
    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if "_target_" not in node and node.get("backend") in _BACKENDS:
        settings = {k: v for k, v in node.items() if k != "backend"}
        return _BACKENDS[node["backend"]](**settings)
    return build(node, "logger")


def start(cfg, out_dir: Path, job_type: str = "attack", group: str | None = None, **kwargs):
    """A wandb run, or None with logger=none, of a recorded config (results.json's, or a composed
    one): what the sweep report opens its run with. A job starts its run from its parsed logger."""
    config = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return tracker(config["logger"]).start(config, out_dir, job_type, group, **kwargs)


def run_id(out_dir: Path) -> str:
    return config_hash(str(Path(out_dir).resolve()), length=12)


def sweep_group():
    """Every job of one multirun shares a W&B group: the sweep folder's name (the report uses it
    too)."""
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
    """Summary scalars, a log-spaced ROC table per attack, and the plots. Never
    wandb.plot.roc_curve: it rounds FPR to three decimals, which hides the low-FPR regime that
    matters here."""
    if run is None:
        return
    import wandb

    run.summary.update(summary(record))
    payload = {
        f"roc_table/{name}": wandb.Table(
            columns=["fpr", "tpr"], data=[list(p) for p in zip(c["fpr"], c["tpr"], strict=True)]
        )
        for name, c in record["roc"].items()
    }
    payload.update({key: wandb.Image(str(path)) for key, path in images.items()})
    run.log(payload)


def summary(record: dict) -> dict:
    """Flat scalars of a job's results.json for its W&B run summary: gap/<key>, loss_gap/<key>,
    d_prime/<key>, <attack>/<metric>,
    <attack>/skipped (why, for an attack the job could not score), target/size, target/cache_hit,
    utility/<key> and privacy/<key>."""
    out = {f"gap/{k}": v for k, v in record["gap"].items() if _scalar(v)}
    for measure in ("loss_gap", "d_prime"):
        out.update(
            {f"{measure}/{k}": v for k, v in (record.get(measure) or {}).items() if _scalar(v)}
        )
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
    """The `exposed_members` table: the members of `top` (mia.evaluation.scores.most_exposed:
    highest exposure first) with a thumbnail of each pair's image (`images`: {uid: PIL image}),
    caption, exposure and every attack's score."""
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
