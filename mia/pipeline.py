"""One job: the spec (mia/job.py), then corpus -> splits -> target (cached) -> features (cached) ->
the attacks' reference models (cached; none for most jobs) -> attacks -> scores.parquet,
results.json, and report.md (mia/report/job.py)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig

from mia import distributed, plots, tracking
from mia.attacks.base import AttackContext, NotApplicable
from mia.data import canaries as canary_groups
from mia.data.pairs import load_raw
from mia.data.shards import corrupt_report
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN, SCORED
from mia.evaluation import dataset_inference, metrics, results, scores, utility
from mia.evaluation.scoring import (
    calibrate,
    compare,
    reference_scores,
    score_attack,
    score_canaries,
    unshifted,
)
from mia.features import extract_features, released
from mia.job import JobSpec
from mia.provenance import git_revision
from mia.report import job as job_report
from mia.training import history
from mia.training.shadows import ShadowPlan

log = logging.getLogger(__name__)


def output_dir(log_dir: Path) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    # called outside @hydra.main (tests, notebooks): same layout, microseconds keep jobs apart
    return Path(log_dir) / "runs" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


def prepare(cfg):
    """(member corpus, non-member corpus, splits, TrainSpec) of a job's config."""
    job = JobSpec.parse(cfg)
    return (*job.data.load(job.cache_dir), job.train)


def run(cfg) -> Path | None:
    """The job, once per rank: every rank trains and extracts features; rank 0 does the rest. The
    whole config is checked before any rank starts (mia/job.py)."""
    job = JobSpec.parse(cfg)
    with distributed.session(job.train.trainer, run, cfg) as world:
        return _run(job, world)


def run_here(job: JobSpec) -> Path:
    """A parsed job in this process alone, whatever its trainer group: the Python entry point's
    (mia/audit.py), whose target is a model in memory that no other rank could receive."""
    return _run(job, distributed.single(job.train.trainer))


def _run(job: JobSpec, world) -> Path | None:
    data, cache_dir = job.data, job.cache_dir
    members, nonmembers, splits = data.load(cache_dir)
    log.info("splits: %s", splits.summary())
    log.info("plan: %s", _plan(job, splits))
    canaries = canary_groups.draw(data.canaries, splits)
    # lira / rmia: a shadows.size=target whose filler pool is too small for N is refused here,
    # before any training
    shadows = ShadowPlan(
        job.attacks, job.train, splits, cache_dir, job.n, canaries, data.split.holdout
    )
    out, wandb_run = None, None
    if world.is_main:  # the job's folder and W&B run belong to rank 0
        out = output_dir(job.log_dir)
        out.mkdir(parents=True, exist_ok=True)
        wandb_run = job.logger.start(job.config, out)
    try:
        target = job.target.obtain(
            job.train,
            corpus=members,
            split=data.split,
            size=job.n,
            uids=canary_groups.training_uids(splits.members, canaries),
            canaries=canaries.key() if canaries else None,
            cache_dir=cache_dir,
            logger=tracking.lightning_logger(wandb_run),
            world=world,
            sibling=lambda: data.sibling_corpus(cache_dir),  # target=finetune pretrains on it
        )
        if canaries is not None:
            canary_groups.check_trained(target.trained_uids, canaries)
        t0 = time.time()
        features, features_hit = extract_features(target, splits, members, nonmembers, world)
        canary_features = (
            None
            if canaries is None
            else canary_groups.features_of(
                lambda s: extract_features(target, s, members, nonmembers, world)[0],
                splits,
                canaries,
            )
        )
        features_s = time.time() - t0
        if not world.is_main:
            return None
        history.copy_to(target.dir, out)  # on a cache hit, that of the run that trained it
        defense = job.train.defense
        features = released(defense, features)  # what the attacks and utility see (§11.4)
        if canary_features is not None:  # the canaries are answered as every other query is
            canary_features = released(defense, {MEMBER_EVAL: canary_features})[MEMBER_EVAL]
        # under data.shift the non-members' shards include the member shards: list each shard once
        shards = list(
            dict.fromkeys(members.shards + (nonmembers.shards if nonmembers is not members else []))
        )
        # the training stage's last part: every reference model the attacks need, before any runs
        t_references = time.time()
        references = shadows.train(shards, target, features, job.seed)
        references_s = time.time() - t_references if references else 0.0
        ctx = AttackContext(
            features=features,
            splits=splits,
            target=target,
            shards=shards,
            references=references,
            seed=job.seed,
        )
        indexes = (members.index,) if nonmembers is members else (members.index, nonmembers.index)
        record = _record(
            job, target, members, nonmembers, indexes, splits, features, features_hit, world
        )
        t_utility = time.time()
        record["defense"] = defense.record(target.dir)
        record["utility"] = _utility(job, target, features, indexes, defense)
        utility_s = time.time() - t_utility
        t_attacks = time.time()
        swapped = data.swapped(
            features[NONMEMBER_EVAL].uids, members
        )  # None unless data.shift swapped some
        images, attack_scores = _attack(job, ctx, record, out, swapped)
        record["timing"] = {
            "train_s": target.train_s,
            "references_s": references_s,  # the attacks' shadow models, trained or loaded
            "features_s": features_s,
            "attacks_s": time.time() - t_attacks,
            "utility_s": utility_s,
        }
        if canaries is not None:
            record["canaries"] = score_canaries(
                job.attacks, ctx, canaries, canary_features, job.n_bootstrap
            )
        if (
            job.inference is not None
        ):  # from the scores alone: the report reads it, or redoes it from scores.parquet
            results.add_analysis(
                record,
                "dataset_inference",
                {
                    name: dataset_inference.dataset_inference(m, n, job.inference, seed=job.seed)
                    for name, (m, n) in attack_scores.items()
                },
            )
        # Scores first, results.json last: a results.json that names scores.parquet finds it
        # complete.
        table = scores.frame(
            features, {s: _index_captions(ctx.uids(s), indexes) for s in SCORED}, attack_scores
        )
        results.add_scores(record, scores.write(out / scores.FILENAME, table).name)
        path = results.write(out / "results.json", record)
        _report(out, record)
        tracking.log_results(wandb_run, record, images)
        if wandb_run is not None:
            top = scores.most_exposed(table, tracking.EXPOSED_ROWS)
            thumbnails, _ = load_raw(shards, list(top["uid"]), desc="exposed members")
            tracking.log_exposed(wandb_run, top, dict(zip(top["uid"], thumbnails, strict=False)))
    finally:
        tracking.finish(wandb_run)  # a crashed job must not leak its run into the next multirun job
    log.info("gap %.4f (95%% CI %.4f-%.4f)", record["gap"]["value"], *record["gap"]["ci95"])
    print(f"results: {path}")
    return path


def _report(out: Path, record: dict):
    """report.md from the record just written: a plot or table it fails on costs the report only."""
    try:
        job_report.write(out, record)
    except Exception as e:  # noqa: BLE001 - results.json is written; the job still succeeds
        log.warning(
            "%s not written (%s: %s); results.json is complete",
            job_report.FILENAME,
            type(e).__name__,
            e,
        )


def _plan(job: JobSpec, splits) -> str:
    """The job in one line: N, K (saying so where N caps data.split.eval_size) and the attacks."""
    asked, k = job.data.split.eval_size, splits.eval_size
    cap = (
        ""
        if k == asked
        else f" (data.split.eval_size={asked} capped by N: at most N - aux_size/2 members are "
        "scored, so that D_all keeps trained members)"
    )
    return (
        f"N={len(splits.members)} members, K={k} members and K non-members scored{cap}; "
        f"attacks: {', '.join(job.attacks)}"
    )


def _record(
    job, target, members, nonmembers, indexes, splits, features, features_hit, world
) -> dict:
    """results.json before the attacks: provenance, target, data and the member / non-member gap;
    `indexes` are the corpus indexes the pairs come from (one, or members' and non-members')."""
    gap = metrics.gap(
        features[MEMBER_EVAL].cos,
        features[NONMEMBER_EVAL].cos,
        n_bootstrap=job.n_bootstrap,
        seed=job.seed,
    )
    gap["gaussian_auc"] = metrics.gaussian_auc(
        gap["value"], gap["member_std"], gap["nonmember_std"]
    )
    # The gap two more ways, from the same embeddings (no forward pass): in contrastive loss against
    # the known non-members (D_no) as the bank, and as the separability of the cosines.
    member, nonmember, bank = (
        (features[s].image, features[s].text)
        for s in (MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN)
    )
    loss_gap = metrics.loss_gap(
        member,
        nonmember,
        bank,
        float(target.model.logit_scale.detach().exp()),
        n_bootstrap=job.n_bootstrap,
        seed=job.seed,
    )
    d_prime = metrics.d_prime(
        features[MEMBER_EVAL].cos,
        features[NONMEMBER_EVAL].cos,
        n_bootstrap=job.n_bootstrap,
        seed=job.seed,
    )
    return results.new(
        config=job.config,
        git=git_revision(),
        seed=job.seed,
        target={
            "source": "train" if job.target.trains else "checkpoint",
            "size": target.size,
            "epochs": target.epochs,
            "model": job.train.model["name"],
            "params": sum(p.numel() for p in target.model.parameters()),
            "world_size": world.size,
            "cache_key": target.key,
            "cache_hit": target.cache_hit,
            "checkpoint": str(target.checkpoint),
            "trained_uids": _str(target.trained_uids),
            "init": _str(target.init),  # fine-tuned from these weights; null: trained from scratch
            "open_clip": _str(target.exported),
        },
        data={
            "nonmembers": job.data.condition,
            **job.data.shift_record(),
            "corpus": members.name,
            "nonmember_corpus": nonmembers.name,
            **corrupt_report(*indexes),
            "features_cache_hit": features_hit,
            **splits.summary(),
            # K as data.split.eval_size asked for it, and as scored once N capped it (scored_size)
            "eval_size": {"asked": job.data.split.eval_size, "scored": splits.eval_size},
        },
        gap=gap,
        loss_gap=loss_gap,
        d_prime=d_prime,
    )


def _utility(job, target, features, indexes, defense) -> dict:
    """Retrieval on the held-out pool; attributes too where the captions follow the embedded
    corpus's grammar (i.i.d. non-members of data=synthetic: docs/design.md §11.1)."""
    captions = None
    if job.data.attributes:
        captions = {s: _index_captions(features[s].uids, indexes) for s in utility.ATTRIBUTE_SETS}
    release = defense.release if defense.releases else None
    return utility.measure(features, captions, target.model, target.tokenizer, release)


def _attack(job, ctx, record, out, swapped=None) -> tuple[dict, dict]:
    """Run every attack into `record`, with its paired comparison with the reference (but the
    reference's own), its thresholds calibrated on D_no (docs/design.md §5) and, where `swapped`
    marks the non-members data.shift swapped, its AUC on the others (§2.6); returns the plots for
    W&B ({key: path}) and each attack's (member scores, non-member scores) for scores.parquet. An
    attack the data give nothing to score with (NotApplicable) is recorded under `skipped`, and the
    others still run."""
    curves, images, attack_scores = {}, {}, {}
    reference, reference_attack = job.reference
    ref_scores = reference_scores(reference_attack, ctx)
    for name, attack in job.attacks.items():
        try:
            scored = score_attack(attack, ctx, job.n_bootstrap, job.seed)
        except NotApplicable as why:
            results.add_skipped(record, name, str(why))
            log.warning("%s not scored: %s", name, why)
            continue
        res, m = scored.result, scored.metrics
        attack_scores[name] = (res.member_scores, res.nonmember_scores)
        table = metrics.roc_table(*metrics.labelled(res.member_scores, res.nonmember_scores))
        curves[name] = ([r["fpr"] for r in table], [r["tpr"] for r in table])
        vs_csa = None if name == reference else compare(res, ref_scores, job.n_bootstrap, job.seed)
        calibrated, why_not = calibrate(attack, res, ctx, job.fpr_targets)
        kept = (
            None
            if swapped is None
            else unshifted(
                attack_scores[name],
                swapped,
                None if name == reference else ref_scores,
                job.n_bootstrap,
                job.seed,
            )
        )
        results.add_attack(
            record,
            name,
            m,
            scored.seconds,
            res.diagnostics,
            {"fpr": curves[name][0], "tpr": curves[name][1]},
            reference=reference,
            vs_csa=vs_csa,
            calibrated=calibrated,
            calibrated_skipped=why_not,
            unshifted=kept,
        )
        images[f"scores/{name}"] = plots.score_histogram(
            res.member_scores,
            res.nonmember_scores,
            out / f"scores_{name}.png",
            f"{name}: N={ctx.target.size}, AUC={m['auc']:.3f}",
        )
        log.info(
            "%s: AUC %.3f (95%% CI %.3f-%.3f), TPR@1%%FPR %.3f%s",
            name,
            m["auc"],
            *m["auc_ci95"],
            m["tpr_at_fpr_1e-2"],
            "" if m["low_fpr_resolved"]["1e-2"] else " (unresolved)",
        )
        if kept is not None and kept["auc_unshifted"] is not None:
            log.info(
                "%s on the %d unshifted non-members: AUC %.3f",
                name,
                kept["n_unshifted"],
                kept["auc_unshifted"],
            )
        if vs_csa is not None:
            log.info(
                "%s vs %s: delta AUC %+.3f (95%% CI %s), DeLong p %.3g",
                name,
                reference,
                vs_csa["delta_auc"],
                "{:+.3f} to {:+.3f}".format(*vs_csa["delta_auc_ci95"])
                if vs_csa["delta_auc_ci95"]
                else "none",
                vs_csa["delong_p_value"],
            )
    images["roc_loglog"] = plots.roc_loglog(curves, out / "roc_loglog.png", f"N={ctx.target.size}")
    return images, attack_scores


def _index_captions(uids, indexes) -> list[str]:
    """The captions of `uids` as the corpus index holds them: no shard is read again for them."""
    found = {}
    for index in indexes:
        keep = np.isin(index.uids, uids)
        found.update(zip(index.uids[keep], index.captions[keep], strict=True))
    return [str(found[u]) for u in uids]


def _str(path) -> str | None:
    return None if path is None else str(path)
