"""One way from an attack's scores to its metrics, for the evaluation sets and the canaries alike."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from mia.attacks.base import AttackContext, AttackResult
from mia.data.canaries import Canaries
from mia.evaluation import metrics

log = logging.getLogger(__name__)


def labelled(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) of the two scored sets, members first: labels 1 for a member, 0 for a non-member."""
    scores = np.concatenate([member_scores, nonmember_scores])
    return scores, np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]


@dataclass
class Scored:
    result: AttackResult
    metrics: dict     # mia.evaluation.metrics.roc_metrics
    seconds: float


def score_attack(attack, ctx: AttackContext, n_bootstrap: int, seed: int) -> Scored:
    """Run `attack` on `ctx` and measure its scores against the membership labels."""
    t0 = time.time()
    res = attack(ctx)
    m = metrics.roc_metrics(*labelled(res.member_scores, res.nonmember_scores), n_bootstrap=n_bootstrap, seed=seed)
    return Scored(res, m, time.time() - t0)


def score_canaries(attacks, ctx: AttackContext, canaries: Canaries, canary_features, n_bootstrap: int) -> dict:
    """{"count", "copies", "attacks": {name: {"copies=<c>": metrics}}, "skipped": {name: why}}. Each group
    is scored like member_eval, against the same non-members: every attack is run again with the group
    in member_eval's place. Attacks that train shadow models are skipped: their reference pool holds
    member_eval, so another member set would need shadows of its own."""
    out = {"count": canaries.count, "copies": list(canaries.groups), "attacks": {}, "skipped": {}, "seconds": {}}
    row = {u: i for i, u in enumerate(canary_features.uids)}
    for name, attack in attacks.items():
        if attack.needs_shadows:
            out["skipped"][name] = "trains shadow models whose pool holds member_eval"
            continue
        t0, per_copy = time.time(), {}
        for c, group in canaries.groups.items():
            idx = np.array([row[u] for u in group])
            f = canary_features
            sub = ctx.with_members(type(f)(f.uids[idx], f.image[idx], f.text[idx], f.cos[idx]))
            m = per_copy[f"copies={c}"] = score_attack(attack, sub, n_bootstrap, ctx.seed).metrics
            log.info("canaries %s, %d copies: AUC %.3f, TPR@1%%FPR %.3f", name, c, m["auc"], m["tpr_at_fpr_1e-2"])
        out["attacks"][name] = per_copy
        out["seconds"][name] = time.time() - t0
    return out
