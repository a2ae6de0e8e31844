"""RMIA (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference Attacks") with the
shadow CLIPs of mia/training/shadows.py as reference models.

Pr(x | theta) is the probability the model gives the pair among a bank of known non-member pairs,
sigmoid of the contrastive log-odds statistic (shadows.py). With reference models theta_m:
- online:  Pr(x) = mean over all shadows of Pr(x | theta_m) (half of them trained on x);
- offline: Pr(x) = ((1 + a) Pr_OUT(x) + (1 - a)) / 2, Pr_OUT the mean over the shadows x is OUT
  of; a = `offline_a` stands in for the missing IN models (a = 1: Pr(x) = Pr_OUT(x)).
LR(x) = Pr(x | target) / Pr(x), and the score is the share of population pairs z (num_z drawn
from nonmember_known, the same Pr(z) rule as x) that x dominates:
    score(x) = mean_z 1[ LR(x) / LR(z) > gamma ].
The z are pool pairs too, so like x they are IN for half the shadows; offline looks only at the
shadows they are OUT of, as for x. Ratios are compared in log space. The score moves in steps of
1 / num_z, so the pairs that dominate every z tie at 1 and the low-FPR end of the ROC is lost;
`break_ties` adds sigmoid(log LR(x)) / (2 num_z), below one step: since the score is monotone in
LR(x) anyway, it only orders the ties, never swaps two pairs the z comparison had ordered.

The right a depends on how much training raises Pr(x) (the paper tunes it; so does its code):
`offline_a: auto` picks it from a grid by attacking each shadow with the others, whose
memberships are known, and keeping the a with the best mean AUC. The choice never sees the target.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.attacks.shadows import check_shadow_settings, masked_mean, references
from mia.data.splits import EVAL_SETS, MEMBER_EVAL, NONMEMBER_KNOWN, SCORED
from mia.training.shadows import Coverage
from mia.validate import is_int, is_number, require

A_GRID = np.round(np.arange(0, 1.01, 0.1), 2)


def log_sigmoid(s):
    return -np.logaddexp(0.0, -s)


def reference_log_prob(shadow_probs, inside, mode: str, offline_a: float):
    """log Pr(x) for every pool pair, from its probabilities under the shadows [m, n]."""
    if mode == "online":
        return np.log(shadow_probs.mean(0))
    p_out = masked_mean(shadow_probs, ~inside)
    return np.log(((1 + offline_a) * p_out + (1 - offline_a)) / 2)


def tune_offline_a(shadow_logodds, inside) -> tuple[float, dict]:
    """The a of A_GRID under which offline RMIA best tells each shadow's members from its
    non-members, using the remaining shadows as references (mean AUC over shadows). The score is
    monotone in LR(x), so the AUC of log LR stands in for the z comparison."""
    m = len(inside)
    require(
        m >= 4,
        "offline_a",
        "auto",
        "needs num_shadows >= 4 (each pair must stay OUT of some reference)",
    )
    probs = np.exp(log_sigmoid(shadow_logodds))
    auc = {}
    for a in A_GRID:
        per_shadow = []
        for i in range(m):
            rest = np.arange(m) != i
            log_lr = log_sigmoid(shadow_logodds[i]) - reference_log_prob(
                probs[rest], inside[rest], "offline", a
            )
            per_shadow.append(roc_auc_score(inside[i], log_lr))
        auc[float(a)] = float(np.mean(per_shadow))
    return max(auc, key=auc.get), auc


class RMIA(Attack):
    name = "rmia"
    needs_shadows = True
    reads_known_nonmembers = True  # D_no is in the shadows' reference pool, and its population z

    def __init__(
        self,
        *,
        num_shadows: int,
        mode: str,
        gamma: float,
        num_z: int,
        offline_a,
        break_ties: bool,
        shadows: dict,
    ):
        require(mode in ("online", "offline"), "mode", mode, "choose 'online' or 'offline'")
        require(
            offline_a == "auto" or (is_number(offline_a) and 0 <= offline_a <= 1),
            "offline_a",
            offline_a,
            "'auto' or a number in [0, 1]",
        )
        require(is_number(gamma) and gamma > 0, "gamma", gamma, "a number > 0")
        require(is_int(num_z) and num_z >= 1, "num_z", num_z, "an integer >= 1")
        require(isinstance(break_ties, bool), "break_ties", break_ties, "true or false")
        self.shadows = check_shadow_settings(num_shadows, "logodds", shadows)
        self.num_shadows, self.mode, self.gamma, self.num_z, self.offline_a = (
            num_shadows,
            mode,
            gamma,
            num_z,
            offline_a,
        )
        self.break_ties = break_ties
        self.tuning: dict = {}

    def reference_needs(self) -> Coverage:
        """What the reference models of shadows.paths must give: nothing online (Pr(x) averages them
        all); offline, an OUT model for each scored pair and each population pair z; with
        offline_a=auto, which attacks each reference with the others, 4 models, two OUT for every
        pool pair, and each one IN for some pool pairs and OUT for others."""
        if self.mode == "online":
            return Coverage(SCORED, why="mode=online")
        if self.offline_a == "auto":
            return Coverage(EVAL_SETS, 0, 2, models=4, mixed=True, why="offline_a=auto")
        return Coverage((*SCORED, NONMEMBER_KNOWN), 0, 1, why=f"offline_a={self.offline_a}")

    def resolved_a(self, ref) -> float:
        if self.offline_a != "auto":
            return float(self.offline_a)
        a, self.tuning = tune_offline_a(ref.shadow_stats, ref.inside)
        return a

    def score(self, ref, seed: int) -> np.ndarray:
        """RMIA score of member_eval then nonmember_eval, from a shadows.References (logodds)."""
        a = self.resolved_a(ref) if self.mode == "offline" else None
        log_ref = reference_log_prob(
            np.exp(log_sigmoid(ref.shadow_stats)), ref.inside, self.mode, a
        )
        log_lr = log_sigmoid(ref.target_stats) - log_ref
        known = np.arange(ref.n)[ref.rows(NONMEMBER_KNOWN)]
        z = np.random.default_rng(seed).choice(
            known, size=min(self.num_z, len(known)), replace=False
        )
        self.used = {"offline_a": a, "num_z": len(z)}
        x = log_lr[ref.eval_rows()]
        score = (x[:, None] - log_lr[None, z] > np.log(self.gamma)).mean(1)
        if self.break_ties:
            score = score + np.exp(log_sigmoid(x)) / (2 * len(z))
        return score

    def run(self, ctx: AttackContext) -> AttackResult:
        ref = references(ctx, self.num_shadows, "logodds", self.shadows)
        score = self.score(ref, ctx.seed)
        n_mem = len(ctx.features[MEMBER_EVAL].uids)
        diagnostics = {
            **ref.diagnostics(),
            "mode": self.mode,
            "gamma": float(self.gamma),
            "num_z": int(self.used["num_z"]),
            "offline_a": self.used["offline_a"],
            "offline_a_setting": str(self.offline_a),
            "break_ties": bool(self.break_ties),
            "probability": "sigmoid(contrastive log-odds against nonmember_known)",
        }
        if self.mode == "offline" and self.offline_a == "auto":
            diagnostics["offline_a_tuning_auc"] = {str(k): v for k, v in self.tuning.items()}
        return AttackResult(score[:n_mem], score[n_mem:], diagnostics)
