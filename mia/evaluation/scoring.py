"""One way from an attack's scores to its metrics, for the evaluation sets and the canaries alike;
each attack's paired comparison with the reference attack (analysis.comparison.reference, CSA by
default), its thresholds calibrated on the known non-members D_no (docs/design.md §5), and under
data.shift its AUC on the non-members the shift left unswapped (§2.6). What an attack does with D_no
is read from its traits (mia.attacks.base.Attack), never from its name."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from mia.attacks.base import AttackContext, AttackResult, NotApplicable
from mia.data.canaries import Canaries
from mia.evaluation import metrics

log = logging.getLogger(__name__)


@dataclass
class Scored:
    result: AttackResult
    metrics: dict  # mia.evaluation.metrics.roc_metrics
    seconds: float


def score_attack(attack, ctx: AttackContext, n_bootstrap: int, seed: int) -> Scored:
    """Run `attack` on `ctx` and measure its scores against the membership labels."""
    t0 = time.time()
    res = attack(ctx)
    m = metrics.roc_metrics(
        *metrics.labelled(res.member_scores, res.nonmember_scores),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return Scored(res, m, time.time() - t0)


SHADOWS_SKIPPED = (
    "trains shadow models whose pool holds member_eval: scoring D_no would need shadows of its own"
)


def reference_scores(reference, ctx: AttackContext) -> tuple[np.ndarray, np.ndarray]:
    """The reference attack's scores of the evaluation pairs (member, non-member), computed whether
    or not the job runs it, so that every attack is compared with it on the same pairs."""
    res = reference(ctx)
    return res.member_scores, res.nonmember_scores


def compare(result: AttackResult, reference: tuple, n_bootstrap: int, seed: int) -> dict:
    """vs_csa: metrics.paired_comparison of the attack (A) against the reference's scores (B) of the
    same evaluation pairs (reference_scores)."""
    return metrics.paired_comparison(
        (result.member_scores, result.nonmember_scores),
        reference,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )


def unshifted(
    scores: tuple, swapped: np.ndarray, reference: tuple | None, n_bootstrap: int, seed: int
) -> dict:
    """An attack's AUC on the non-members data.shift left as they were (docs/design.md §2.6):
    `scores` are its (member, non-member) scores, `swapped` marks the non-members whose image or
    caption was swapped, `reference` the reference attack's scores of the same pairs (None for the
    reference itself). auc_unshifted with its 95% interval (members against the unswapped
    non-members, the bootstrap of metrics.roc_metrics), n_unshifted, and vs_csa_unshifted, the
    paired comparison with the reference on those pairs; the AUCs are null where every non-member
    was swapped."""
    member, nonmember = (np.asarray(s, dtype=np.float64) for s in scores)
    kept = ~np.asarray(swapped, dtype=bool)
    if kept.shape != nonmember.shape:
        raise ValueError(f"{kept.size} swapped flags for {nonmember.size} non-member scores")
    out = {"auc_unshifted": None, "auc_unshifted_ci95": None, "n_unshifted": int(kept.sum())}
    if reference is not None:
        out["vs_csa_unshifted"] = None
    if not kept.any():
        return out
    m = metrics.roc_metrics(
        *metrics.labelled(member, nonmember[kept]), n_bootstrap=n_bootstrap, seed=seed
    )
    out["auc_unshifted"], out["auc_unshifted_ci95"] = m["auc"], m["auc_ci95"]
    if reference is not None:
        out["vs_csa_unshifted"] = metrics.paired_comparison(
            (member, nonmember[kept]),
            (reference[0], np.asarray(reference[1])[kept]),
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
    return out


def known_scores(attack, ctx: AttackContext) -> tuple[np.ndarray | None, bool, str | None]:
    """(the attack's scores on D_no, whether it fitted on those pairs, why there are none) of a job.

    Each D_no pair is scored as an evaluation pair is (Attack.score_known): an attack whose scores
    of a set depend on that set alone (Attack.per_pair: a pair's cosine, say) scores D_no by
    itself; any other runs again with D_no in member_eval's place (AttackContext.with_members, as
    the canaries do), unless, like gradnorm, it scores a pair among batch-mates that run would not
    give it. Attacks with shadow models (Attack.needs_shadows) and those that cannot score D_no
    (Attack.uncalibrated) get none; those that read D_no (Attack.reads_known_nonmembers) are
    flagged.
    """
    if attack.needs_shadows:
        return None, False, SHADOWS_SKIPPED
    if attack.uncalibrated is not None:
        return None, False, attack.uncalibrated
    return attack.score_known(ctx), attack.reads_known_nonmembers, None


def calibrate(
    attack, result: AttackResult, ctx: AttackContext, targets=(1e-2, 1e-3)
) -> tuple[list | None, str | None]:
    """(calibrated, why not): metrics.calibrated_thresholds of the attack's D_no scores, applied to
    its evaluation scores, each entry with threshold_from_training_pairs; (None, reason) where it
    has none. A realised FPR outside the range exchangeable D_no and evaluation non-members would
    give (metrics.exchangeable_fpr_interval) is logged: the attack is not calibrated there."""
    known, fitted, why = known_scores(attack, ctx)
    if known is None:
        log.info("%s: no thresholds calibrated on D_no: it %s", attack.key, why)
        return None, why
    entries = metrics.calibrated_thresholds(
        known, result.member_scores, result.nonmember_scores, targets
    )
    for e in entries:
        if not e["calibrated"]:
            log.warning(
                "%s is not calibrated at FPR %g: its threshold set on D_no gives the evaluation "
                "non-members FPR %.4f, outside the %.4f-%.4f that exchangeable non-members give",
                attack.key,
                e["fpr_target"],
                e["realised_fpr"],
                *e["expected_fpr95"],
            )
    return [{**e, "threshold_from_training_pairs": fitted} for e in entries], None


def score_canaries(
    attacks, ctx: AttackContext, canaries: Canaries, canary_features, n_bootstrap: int
) -> dict:
    """{"count", "copies", "attacks": {name: {"copies=<c>": metrics}}, "skipped": {name: why}}. Each
    group is scored like member_eval, against the same non-members: every attack is run again with
    the group in member_eval's place. Attacks that train shadow models are skipped: their reference
    pool holds member_eval, so another member set would need shadows of its own."""
    out = {
        "count": canaries.count,
        "copies": list(canaries.groups),
        "attacks": {},
        "skipped": {},
        "seconds": {},
    }
    row = {u: i for i, u in enumerate(canary_features.uids)}
    for name, attack in attacks.items():
        if attack.needs_shadows:
            out["skipped"][name] = "trains shadow models whose pool holds member_eval"
            continue
        t0, per_copy = time.time(), {}
        try:
            for c, group in canaries.groups.items():
                idx = np.array([row[u] for u in group])
                f = canary_features
                sub = ctx.with_members(type(f)(f.uids[idx], f.image[idx], f.text[idx], f.cos[idx]))
                m = per_copy[f"copies={c}"] = score_attack(
                    attack, sub, n_bootstrap, ctx.seed
                ).metrics
                log.info(
                    "canaries %s, %d copies: AUC %.3f, TPR@1%%FPR %.3f",
                    name,
                    c,
                    m["auc"],
                    m["tpr_at_fpr_1e-2"],
                )
        except NotApplicable as why:
            out["skipped"][name] = str(why)
            continue
        out["attacks"][name] = per_copy
        out["seconds"][name] = time.time() - t0
    return out
