"""One job: corpus -> splits -> target (cached) -> features (cached) -> attacks -> results.json."""
from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mia import distributed, metrics, plots, results, tracking
from mia.attacks.base import AttackContext, ParamError
from mia.attacks.shadows import ShadowTrainer
from mia.data.corpus import load_corpus
from mia.data.shards import corrupt_report
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, build_splits
from mia.features import extract_features
from mia.provenance import git_revision
from mia.sizes import parse_size
from mia.target import TrainSpec, target_key, train_target

log = logging.getLogger(__name__)


def output_dir(cfg) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    # called outside @hydra.main (tests, notebooks): same layout, microseconds keep jobs apart
    return Path(cfg.paths.log_dir) / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def prepare(cfg):
    """(member corpus, non-member corpus, splits, TrainSpec), with every bad input refused before
    any corpus is generated or model trained."""
    spec = TrainSpec.from_cfg(cfg)
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
    return members, nonmembers, splits, spec


def run(cfg) -> Path | None:
    """The job, once per rank: every rank trains and extracts features; rank 0 does the rest."""
    with distributed.session(cfg, run) as world:
        return _run(cfg, world)


def build_attacks(attack_cfg) -> dict:
    """{name: Attack} of the `attack` group; a bad setting is refused here, naming its key."""
    attacks = {}
    for name, acfg in attack_cfg.items():
        try:
            attacks[name] = instantiate(acfg)
        except InstantiationException as err:
            if isinstance(err.__cause__, ParamError):
                raise err.__cause__.under(f"attack.{name}") from None
            raise
    return attacks


def _run(cfg, world) -> Path | None:
    attacks = build_attacks(cfg.attack)
    members, nonmembers, splits, spec = prepare(cfg)
    cache_dir = Path(cfg.paths.cache_dir)
    out, wandb_run = None, None
    if world.is_main:  # the job's folder and W&B run belong to rank 0
        out = output_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        wandb_run = tracking.start(cfg, out)
    try:
        key = target_key(spec, members.fingerprint, cfg.data.split, cfg.data.size)
        target = train_target(spec, members.shards, splits.members, cache_dir, key,
                              logger=tracking.lightning_logger(wandb_run), world=world)
        t0 = time.time()
        features, features_hit = extract_features(target, splits, members, nonmembers, world)
        features_s = time.time() - t0
        if not world.is_main:
            return None
        shards = members.shards + (nonmembers.shards if nonmembers is not members else [])
        ctx = AttackContext(features=features, splits=splits, target=target, shards=shards,
                            shadows=ShadowTrainer(spec, shards, cache_dir, target.key), seed=cfg.seed)
        record = _record(cfg, target, members, nonmembers, splits, features, features_hit, world)
        t_attacks = time.time()
        images = _attack(attacks, ctx, record, cfg, out)
        record["timing"] = {"train_s": target.train_s, "features_s": features_s,
                            "attacks_s": time.time() - t_attacks}
        path = results.write(out / "results.json", record)
        tracking.log_results(wandb_run, record, images)
    finally:
        tracking.finish(wandb_run)  # a crashed job must not leak its run into the next multirun job
    log.info("gap %.4f (95%% CI %.4f-%.4f)", record["gap"]["value"], *record["gap"]["ci95"])
    print(f"results: {path}")
    return path


def _record(cfg, target, members, nonmembers, splits, features, features_hit, world) -> dict:
    """results.json before the attacks: provenance, target, data and the member / non-member gap."""
    indexes = (members.index,) if nonmembers is members else (members.index, nonmembers.index)
    gap = metrics.gap(features[MEMBER_EVAL].cos, features[NONMEMBER_EVAL].cos, n_bootstrap=cfg.n_bootstrap,
                      seed=cfg.seed)
    gap["gaussian_auc"] = metrics.gaussian_auc(gap["value"], gap["member_std"], gap["nonmember_std"])
    return results.new(
        config=OmegaConf.to_container(cfg, resolve=True), git=git_revision(), seed=cfg.seed,
        target={"size": target.size, "epochs": target.epochs, "model": cfg.model.name, "world_size": world.size,
                "cache_key": target.key, "cache_hit": target.cache_hit, "checkpoint": str(target.checkpoint),
                "trained_uids": str(target.trained_uids)},
        data={"nonmembers": cfg.data.nonmembers, "corpus": members.name, **corrupt_report(*indexes),
              "features_cache_hit": features_hit, **splits.summary()},
        gap=gap)


def _attack(attacks, ctx, record, cfg, out) -> dict:
    """Run every attack into `record`; returns the plots for W&B ({key: path})."""
    curves, images = {}, {}
    for name, attack in attacks.items():
        t1 = time.time()
        try:
            res = attack.run(ctx)
        except ParamError as err:  # a setting that does not fit this job's data, e.g. lam too high
            raise err.under(f"attack.{name}") from None
        scores = np.concatenate([res.member_scores, res.nonmember_scores])
        labels = np.r_[np.ones(len(res.member_scores)), np.zeros(len(res.nonmember_scores))]
        m = metrics.roc_metrics(scores, labels, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
        table = metrics.roc_table(scores, labels)
        curves[name] = ([r["fpr"] for r in table], [r["tpr"] for r in table])
        results.add_attack(record, name, m, time.time() - t1, res.diagnostics,
                           {"fpr": curves[name][0], "tpr": curves[name][1]})
        images[f"scores/{name}"] = plots.score_histogram(
            res.member_scores, res.nonmember_scores, out / f"scores_{name}.png",
            f"{name}: N={ctx.target.size}, AUC={m['auc']:.3f}")
        log.info("%s: AUC %.3f (95%% CI %.3f-%.3f), TPR@1%%FPR %.3f", name, m["auc"], *m["auc_ci95"],
                 m["tpr_at_fpr_1e-2"])
    images["roc_loglog"] = plots.roc_loglog(curves, out / "roc_loglog.png", f"N={ctx.target.size}")
    return images
