"""One job: corpus -> splits -> target (cached) -> features (cached) -> attacks -> scores.parquet, results.json."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mia import defenses, distributed, plots, tracking
from mia.data import canaries as canary_groups
from mia.evaluation import dataset_inference, metrics, results, scores, utility
from mia.evaluation.scoring import labelled, score_attack, score_canaries
from mia.attacks.base import AttackContext, ParamError
from mia.attacks.shadows import ShadowTrainer
from mia.data.corpus import extension, load_corpus, load_shifted, shift_settings
from mia.data.pairs import load_raw
from mia.data.shards import corrupt_report
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED, build_splits
from mia.features import extract_features, released
from mia.provenance import git_revision
from mia.sizes import parse_size
from mia.training.spec import TrainSpec, target_key
from mia.training.stage import load_target, train_target

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
    audit = cfg.data.source == "audit"
    if cfg.data.size is not None or not audit or cfg.target.source == "train":
        parse_size(cfg.data.size, "data.size")
    if not audit and cfg.data.nonmembers not in ("iid", "ood"):
        raise ValueError(f"data.nonmembers={cfg.data.nonmembers!r}: choose 'iid' or 'ood'")
    shift, parts = shift_settings(cfg.data)
    if not cfg.attack:
        raise ValueError("attack is empty: choose at least one, e.g. attack=csa")
    cache_dir = Path(cfg.paths.cache_dir)
    members = load_corpus(cfg.data, cache_dir)
    if audit or cfg.data.nonmembers == "ood":  # non-members from a corpus of their own
        nonmembers = load_corpus(cfg.data, cache_dir, shifted=True)
        splits = build_splits(members.index, cfg.data.split, cfg.data.size, nonmembers.index,
                              extension=None if audit else extension(cfg.data))
    elif shift > 0:  # held-out pairs with some images / captions swapped (docs/design.md §2.6)
        nonmembers = load_shifted(cfg.data, members, cache_dir, shift, parts)
        splits = build_splits(members.index, cfg.data.split, cfg.data.size, shifted_index=nonmembers.index,
                              extension=extension(cfg.data))
    else:  # shift 0 is the i.i.d. job itself, not a mixture that happens to swap nothing
        nonmembers = members
        splits = build_splits(members.index, cfg.data.split, cfg.data.size, extension=extension(cfg.data))
    log.info("splits: %s", splits.summary())
    return members, nonmembers, splits, spec


def condition(cfg) -> str:
    """iid, ood (the shifted sibling corpus), audit (member / non-member folders of data=audit), or
    for i.i.d. non-members under data.shift > 0: shift=<s> (images and captions), image-shift=<s> or
    caption-shift=<s> (one part), so that a sweep report never pools two shifts."""
    if cfg.data.source == "audit":
        return "audit"
    shift, parts = shift_settings(cfg.data)
    if shift == 0:
        return cfg.data.nonmembers
    return f"{'' if len(parts) > 1 else parts[0] + '-'}shift={shift:g}"


def run(cfg) -> Path | None:
    """The job, once per rank: every rank trains and extracts features; rank 0 does the rest."""
    TrainSpec.from_cfg(cfg)  # bad values are refused before any rank starts
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
        attacks[name].key = f"attack.{name}"
    return attacks


def _shadow_training(cfg, attacks) -> bool:
    """Whether this job may train shadow models; attacks that need them are refused up front if not."""
    if cfg.target.source == "train" or cfg.target.train_shadows:
        return True
    for name, attack in attacks.items():
        if attack.needs_shadows:
            raise ValueError(f"attack.{name} needs shadow models, and target=checkpoint trains none: set "
                             "target.train_shadows=true (the shadows then train like a target of the model "
                             "and train groups: model=..., train.epochs, train.batch_size, ...) or leave "
                             f"{name} out of attack")
    return False


def inference_settings(cfg) -> dict | None:
    """`analysis.dataset_inference` checked (a bad value names its key), or None where it is off."""
    di = OmegaConf.to_container(cfg.analysis.dataset_inference, resolve=True) if cfg.get("analysis") and \
        cfg.analysis.get("dataset_inference") else None
    if not di or not di.get("enabled", True):
        return None
    return dataset_inference.check_settings(di)


def _run(cfg, world) -> Path | None:
    attacks = build_attacks(cfg.attack)
    inference = inference_settings(cfg)
    if cfg.target.source not in ("train", "checkpoint"):
        raise ValueError(f"target.source={cfg.target.source!r}: choose target=train or target=checkpoint")
    shadows = _shadow_training(cfg, attacks)
    canary_groups.settings(cfg.data)  # refused, naming its key, before any corpus is read
    members, nonmembers, splits, spec = prepare(cfg)
    canaries = canary_groups.draw(cfg.data, splits)
    cache_dir = Path(cfg.paths.cache_dir)
    out, wandb_run = None, None
    if world.is_main:  # the job's folder and W&B run belong to rank 0
        out = output_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        wandb_run = tracking.start(cfg, out)
    try:
        if cfg.target.source == "train":
            key = target_key(spec, members.fingerprint, cfg.data.split, cfg.data.size,
                             canaries=canaries.key() if canaries else None)
            target = train_target(spec, members.shards, canary_groups.training_uids(splits.members, canaries),
                                  cache_dir, key, logger=tracking.lightning_logger(wandb_run), world=world)
            target = replace(target, size=len(splits.members))  # N, not N plus the canaries' copies
            if canaries is not None:
                canary_groups.check_trained(target.trained_uids, canaries)
        else:
            target = load_target(cfg.target, cfg.model, cache_dir)
        t0 = time.time()
        features, features_hit = extract_features(target, splits, members, nonmembers, world)
        canary_features = None if canaries is None else canary_groups.features_of(
            lambda s: extract_features(target, s, members, nonmembers, world)[0], splits, canaries)
        features_s = time.time() - t0
        if not world.is_main:
            return None
        defense = defenses.build(spec.defense)
        features = released(defense, features)  # what the attacks and utility see (§11.4)
        # under data.shift the non-members' shards include the member shards: list each shard once
        shards = list(dict.fromkeys(members.shards + (nonmembers.shards if nonmembers is not members else [])))
        ctx = AttackContext(features=features, splits=splits, target=target, shards=shards,
                            shadows=ShadowTrainer(spec, shards, cache_dir, target.key) if shadows else None,
                            seed=cfg.seed)
        indexes = (members.index,) if nonmembers is members else (members.index, nonmembers.index)
        record = _record(cfg, target, members, nonmembers, indexes, splits, features, features_hit, world)
        t_utility = time.time()
        record["defense"] = defense.record(target.dir)
        record["utility"] = _utility(cfg, target, features, indexes, defense)
        utility_s = time.time() - t_utility
        t_attacks = time.time()
        images, attack_scores = _attack(attacks, ctx, record, cfg, out)
        record["timing"] = {"train_s": target.train_s, "features_s": features_s,
                            "attacks_s": time.time() - t_attacks, "utility_s": utility_s}
        if canaries is not None:
            record["canaries"] = score_canaries(attacks, ctx, canaries, canary_features, cfg.n_bootstrap)
        if inference is not None:  # from the scores alone, so the report can redo it from scores.parquet
            results.add_analysis(record, "dataset_inference", {
                name: dataset_inference.dataset_inference(m, n, inference, seed=cfg.seed)
                for name, (m, n) in attack_scores.items()})
        # Scores first, results.json last: a results.json that names scores.parquet finds it complete.
        table = scores.frame(features, {s: _index_captions(ctx.uids(s), indexes) for s in SCORED}, attack_scores)
        results.add_scores(record, scores.write(out / scores.FILENAME, table).name)
        path = results.write(out / "results.json", record)
        tracking.log_results(wandb_run, record, images)
        if wandb_run is not None:
            top = scores.most_exposed(table, tracking.EXPOSED_ROWS)
            thumbnails, _ = load_raw(shards, list(top["uid"]), desc="exposed members")
            tracking.log_exposed(wandb_run, top, dict(zip(top["uid"], thumbnails)))
    finally:
        tracking.finish(wandb_run)  # a crashed job must not leak its run into the next multirun job
    log.info("gap %.4f (95%% CI %.4f-%.4f)", record["gap"]["value"], *record["gap"]["ci95"])
    print(f"results: {path}")
    return path


def _record(cfg, target, members, nonmembers, indexes, splits, features, features_hit, world) -> dict:
    """results.json before the attacks: provenance, target, data and the member / non-member gap;
    `indexes` are the corpus indexes the pairs come from (one, or members' and non-members')."""
    gap = metrics.gap(features[MEMBER_EVAL].cos, features[NONMEMBER_EVAL].cos, n_bootstrap=cfg.n_bootstrap,
                      seed=cfg.seed)
    gap["gaussian_auc"] = metrics.gaussian_auc(gap["value"], gap["member_std"], gap["nonmember_std"])
    return results.new(
        config=OmegaConf.to_container(cfg, resolve=True), git=git_revision(), seed=cfg.seed,
        target={"source": cfg.target.source, "size": target.size, "epochs": target.epochs, "model": cfg.model.name,
                "params": sum(p.numel() for p in target.model.parameters()), "world_size": world.size,
                "cache_key": target.key, "cache_hit": target.cache_hit,
                "checkpoint": str(target.checkpoint), "trained_uids": _str(target.trained_uids),
                "open_clip": _str(target.exported)},
        data={"nonmembers": condition(cfg), **_shift_record(cfg), "corpus": members.name,
              "nonmember_corpus": nonmembers.name,
              **corrupt_report(*indexes),
              "features_cache_hit": features_hit, **splits.summary()},
        gap=gap)


def _utility(cfg, target, features, indexes, defense) -> dict:
    """Retrieval on the held-out pool; attributes too on the embedded corpus with i.i.d. non-members
    (their captions follow the generator's grammar: docs/design.md §11.1)."""
    captions = None
    if cfg.data.source == "synthetic" and condition(cfg) == "iid":
        captions = {s: _index_captions(features[s].uids, indexes) for s in utility.ATTRIBUTE_SETS}
    release = defense.release if defense.releases else None
    return utility.measure(features, captions, target.model, target.tokenizer, release)


def _shift_record(cfg) -> dict:
    """data.shift and its parts as applied: shift null where non-members have a corpus of their own
    (ood, audit), parts null where nothing is shifted."""
    if cfg.data.source == "audit" or cfg.data.nonmembers != "iid":
        return {"shift": None, "shift_parts": None}
    shift, parts = shift_settings(cfg.data)
    return {"shift": shift, "shift_parts": list(parts) if shift > 0 else None}


def _attack(attacks, ctx, record, cfg, out) -> tuple[dict, dict]:
    """Run every attack into `record`; returns the plots for W&B ({key: path}) and each attack's
    (member scores, non-member scores) for scores.parquet."""
    curves, images, attack_scores = {}, {}, {}
    for name, attack in attacks.items():
        scored = score_attack(attack, ctx, cfg.n_bootstrap, cfg.seed)
        res, m = scored.result, scored.metrics
        attack_scores[name] = (res.member_scores, res.nonmember_scores)
        table = metrics.roc_table(*labelled(res.member_scores, res.nonmember_scores))
        curves[name] = ([r["fpr"] for r in table], [r["tpr"] for r in table])
        results.add_attack(record, name, m, scored.seconds, res.diagnostics,
                           {"fpr": curves[name][0], "tpr": curves[name][1]})
        images[f"scores/{name}"] = plots.score_histogram(
            res.member_scores, res.nonmember_scores, out / f"scores_{name}.png",
            f"{name}: N={ctx.target.size}, AUC={m['auc']:.3f}")
        log.info("%s: AUC %.3f (95%% CI %.3f-%.3f), TPR@1%%FPR %.3f", name, m["auc"], *m["auc_ci95"],
                 m["tpr_at_fpr_1e-2"])
    images["roc_loglog"] = plots.roc_loglog(curves, out / "roc_loglog.png", f"N={ctx.target.size}")
    return images, attack_scores


def _index_captions(uids, indexes) -> list[str]:
    """The captions of `uids` as the corpus index holds them: no shard is read again for them."""
    found = {}
    for index in indexes:
        keep = np.isin(index.uids, uids)
        found.update(zip(index.uids[keep], index.captions[keep]))
    return [str(found[u]) for u in uids]


def _str(path) -> str | None:
    return None if path is None else str(path)
