"""One job: corpus -> splits -> target (cached) -> features (cached) -> attacks -> results.json."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mia import distributed, metrics, plots, tracking
from mia.attacks.base import AttackContext
from mia.cache import atomic_write_text
from mia.data.corpus import load_corpus
from mia.data.splits import build_splits
from mia.features import extract_features
from mia.sizes import parse_size
from mia.train import git_revision, target_key, train_target

log = logging.getLogger(__name__)


def output_dir(cfg) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    # called outside @hydra.main (tests, notebooks): same layout, microseconds keep jobs apart
    return Path(cfg.paths.log_dir) / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def prepare(cfg):
    """Corpus and splits, with every bad input refused before any training starts."""
    parse_size(cfg.data.size, "data.size")
    if cfg.data.nonmembers not in ("iid", "ood"):
        raise ValueError(f"data.nonmembers={cfg.data.nonmembers!r}: choose 'iid' or 'ood'")
    if not cfg.attack:
        raise ValueError("attack is empty: choose at least one, e.g. attack=csa")
    cache_dir = Path(cfg.paths.cache_dir)
    members = load_corpus(cfg.data, cache_dir)
    nonmembers = load_corpus(cfg.data, cache_dir, shifted=True) if cfg.data.nonmembers == "ood" else members
    splits = build_splits(members.index, cfg.data.split, cfg.data.size,
                          nonmembers.index if nonmembers is not members else None)
    log.info("splits: %s", splits.summary())
    return members, nonmembers, splits


def run(cfg) -> Path | None:
    """The job, once per rank: every rank trains and extracts features; rank 0 does the rest."""
    with distributed.session(cfg) as world:
        return _run(cfg, world)


def _run(cfg, world) -> Path | None:
    members, nonmembers, splits = prepare(cfg)
    attacks = {name: instantiate(acfg) for name, acfg in cfg.attack.items()}
    out, wandb_run = None, None
    if world.is_main:  # the job's folder and W&B run belong to rank 0
        out = output_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        wandb_run = tracking.start(cfg, out)
    try:
        target = train_target(cfg, members.shards, splits.members, Path(cfg.paths.cache_dir),
                              target_key(cfg, members.fingerprint), logger=tracking.lightning_logger(wandb_run),
                              world=world)
        t0 = time.time()
        features, features_hit = extract_features(target, splits, members, nonmembers, world)
        features_s = time.time() - t0
        if not world.is_main:
            return None
        mem, non = features["member_eval"].cos, features["nonmember_eval"].cos
        shards = members.shards + (nonmembers.shards if nonmembers is not members else [])
        ctx = AttackContext(features=features, splits=splits, target=target, shards=shards, cfg=cfg,
                            seed=cfg.seed)

        results = {
            "config": OmegaConf.to_container(cfg, resolve=True),
            "git": git_revision(),
            "seed": cfg.seed,
            "target": {"size": target.size, "epochs": target.epochs, "model": cfg.model.name,
                       "world_size": world.size,
                       "cache_key": target.key, "cache_hit": target.cache_hit,
                       "checkpoint": str(target.checkpoint), "trained_uids": str(target.trained_uids)},
            "data": {"nonmembers": cfg.data.nonmembers, "corpus": members.name,
                     "corrupt_skipped": len(members.index.corrupt) + (len(nonmembers.index.corrupt)
                                                                     if nonmembers is not members else 0),
                     "features_cache_hit": features_hit, **splits.summary()},
            "gap": metrics.gap(mem, non, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed),
            "attacks": {},
            "roc": {},  # per attack: TPR on a log-spaced FPR grid, for the sweep report's ROC plots
        }
        results["gap"]["gaussian_auc"] = metrics.gaussian_auc(
            results["gap"]["value"], results["gap"]["member_std"], results["gap"]["nonmember_std"])
        roc_tables, curves, images = {}, {}, {}
        t_attacks = time.time()
        for name, attack in attacks.items():
            t1 = time.time()
            res = attack.run(ctx)
            scores = np.concatenate([res.member_scores, res.nonmember_scores])
            labels = np.r_[np.ones(len(res.member_scores)), np.zeros(len(res.nonmember_scores))]
            m = metrics.roc_metrics(scores, labels, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
            m["seconds"] = time.time() - t1
            m.update(res.diagnostics)
            results["attacks"][name] = m
            roc_tables[name] = metrics.roc_table(scores, labels)
            curves[name] = ([r["fpr"] for r in roc_tables[name]], [r["tpr"] for r in roc_tables[name]])
            results["roc"][name] = {"fpr": curves[name][0], "tpr": curves[name][1]}
            images[f"scores/{name}"] = plots.score_histogram(
                res.member_scores, res.nonmember_scores, out / f"scores_{name}.png",
                f"{name}: N={target.size}, AUC={m['auc']:.3f}")
            log.info("%s: AUC %.3f (95%% CI %.3f-%.3f), TPR@1%%FPR %.3f", name, m["auc"], *m["auc_ci95"],
                     m["tpr_at_fpr_1e-2"])
        images["roc_loglog"] = plots.roc_loglog(curves, out / "roc_loglog.png", f"N={target.size}")
        results["timing"] = {"train_s": target.train_s, "features_s": features_s,
                             "attacks_s": time.time() - t_attacks}
        path = out / "results.json"
        atomic_write_text(path, json.dumps(results, indent=1))
        tracking.log_results(wandb_run, results, roc_tables, images)
    finally:
        tracking.finish(wandb_run)  # a crashed job must not leak its run into the next multirun job
    log.info("gap %.4f (95%% CI %.4f-%.4f)", results["gap"]["value"], *results["gap"]["ci95"])
    print(f"results: {path}")
    return path
