"""LiRA, the likelihood ratio attack (Carlini et al. 2022), with shadow CLIPs trained on random
halves of the auditor's reference pool, at the target's N by default (mia/training/shadows.py), and
the per-pair statistic s of mia/attacks/shadows.py (by default atanh of the pair's cosine).

For a pair with statistic s under the target, fit Gaussians to its statistic under the shadows
that trained on it (IN) and those that did not (OUT):
- online:  score = log N(s; mu_in, sigma_in^2) - log N(s; mu_out, sigma_out^2)
- offline: score = (s - mu_out) / sigma_out, the one-sided test "s is larger than OUT models
  give" (ranks exactly as log Pr[Z < s], Z ~ N(mu_out, sigma_out^2)); IN shadows are ignored.

Offline uses, per pair, only the shadows it is OUT of (exactly half of them), so one set of
shadows serves both modes and RMIA; those shadows are distributed exactly as shadows trained
without the pair, which is all the offline setting asks.

Variance: with few shadows (2 IN, 2 OUT per pair by default) a per-pair standard deviation is
noise, so `variance: global` pools the within-pair variance over all pool pairs, separately for
the IN and the OUT Gaussians. Carlini et al. also fix the variance below 64 shadows, but their code
uses one sigma for both sides, the spread of all IN statistics (between pairs as well as within).
`per_pair` is the paper's variant for many shadows.

The held-out check (`diagnostics.held_out_auc`): each scored pair's statistic averaged over the
shadows that did not train on it, members against non-members. No shadow knows the target, so with
i.i.d. non-members this AUC is 0.5 within its interval; away from 0.5, the non-members come from
another distribution than the members, and Gaussians fitted to shadows of a mixed pool need not
describe the target (docs/design.md §4.11). `nonmember_out_z`, the non-members' mean offline score,
is about 0 where the OUT shadows describe the target's non-members.

Offline LiRA is weak when members sit at a similarity ceiling (heavily memorised small targets,
like the planted test fixture): every member then scores ceiling - mu_out, so the calibration that
helps against easy non-members spreads the members out instead (0.87-0.89 AUC there, below the
raw cosine's 0.91; see tests/attacks/test_lira.py).
"""

from __future__ import annotations

import numpy as np

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.attacks.shadows import check_shadow_settings, masked_mean, references
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED
from mia.training.shadows import Coverage
from mia.validate import ConfigError, require


def gaussian_fit(stats, mask, variance: str):
    """Per-pair mean and std of stats[m, k] over the shadows with mask[m, k]. A pair no shadow has
    on that side (left out of every shadow under shadows.size=target; never a scored pair) gets NaN
    and takes no part in the pooled variance."""
    count = mask.sum(0)
    seen = count > 0
    mean = masked_mean(stats, mask)
    sq = np.where(mask, (stats - mean) ** 2, 0).sum(0)
    if variance == "per_pair":
        require(
            count[seen].min() >= 2,
            "variance",
            variance,
            "needs >= 2 IN and OUT shadows per pair (num_shadows >= 4)",
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(sq / (count - 1))
    elif variance == "global":
        if count[seen].min() >= 2:  # pooled within-pair variance
            std = np.full_like(mean, np.sqrt(sq[seen].sum() / (count[seen] - 1).sum()))
        else:  # one shadow per side: only the spread across pairs is left
            std = np.full_like(mean, stats[mask].std())
    else:
        raise ConfigError("variance", variance, "choose 'global' or 'per_pair'")
    return mean, np.maximum(std, 1e-6)


def auc_interval(pos, neg) -> tuple[float, list[float]]:
    """AUC of `pos` above `neg` (ties count half) and its 95% interval from DeLong's variance."""
    pos, neg = np.sort(pos), np.sort(neg)
    # each positive's share of negatives below it, each negative's share of positives above it
    below = (np.searchsorted(neg, pos, "left") + np.searchsorted(neg, pos, "right")) / (
        2 * len(neg)
    )
    above = 1 - (np.searchsorted(pos, neg, "left") + np.searchsorted(pos, neg, "right")) / (
        2 * len(pos)
    )
    auc = float(below.mean())
    se = np.sqrt(below.var(ddof=1) / len(pos) + above.var(ddof=1) / len(neg))
    return auc, [float(max(0.0, auc - 1.96 * se)), float(min(1.0, auc + 1.96 * se))]


def held_out_check(ref) -> dict:
    """The held-out check of the module docstring, over the scored pairs with an OUT shadow."""
    out = masked_mean(ref.shadow_stats, ~ref.inside)
    sides = [out[ref.rows(name)] for name in SCORED]
    m, n = (side[np.isfinite(side)] for side in sides)
    if len(m) < 2 or len(n) < 2:
        return {"held_out_auc": None, "held_out_auc_ci95": None, "held_out_pairs": [len(m), len(n)]}
    auc, ci = auc_interval(m, n)
    return {"held_out_auc": auc, "held_out_auc_ci95": ci, "held_out_pairs": [len(m), len(n)]}


def log_normal(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)


class LiRA(Attack):
    name = "lira"
    needs_shadows = True
    calibrated_per_pair = True
    reads_known_nonmembers = True  # D_no is in the shadows' reference pool

    def __init__(
        self, *, num_shadows: int, mode: str, variance: str, statistic: str, shadows: dict
    ):
        require(mode in ("online", "offline"), "mode", mode, "choose 'online' or 'offline'")
        require(
            variance in ("global", "per_pair"),
            "variance",
            variance,
            "choose 'global' or 'per_pair'",
        )
        self.shadows = check_shadow_settings(num_shadows, statistic, shadows)
        self.num_shadows, self.mode, self.variance, self.statistic = (
            num_shadows,
            mode,
            variance,
            statistic,
        )

    def reference_needs(self) -> Coverage:
        """What the reference models of shadows.paths must give each scored pair: an OUT Gaussian,
        and an IN one online; two models per side where the variance is per pair."""
        k = 2 if self.variance == "per_pair" else 1
        why = f"mode={self.mode}, variance={self.variance}"
        return Coverage(SCORED, k if self.mode == "online" else 0, k, why=why)

    def score(self, ref) -> np.ndarray:
        """LiRA score of member_eval then nonmember_eval, from a shadows.References."""
        s = ref.target_stats
        mu_out, sd_out = gaussian_fit(ref.shadow_stats, ~ref.inside, self.variance)
        if self.mode == "offline":
            score = (s - mu_out) / sd_out
        else:
            mu_in, sd_in = gaussian_fit(ref.shadow_stats, ref.inside, self.variance)
            score = log_normal(s, mu_in, sd_in) - log_normal(s, mu_out, sd_out)
        return score[ref.eval_rows()]

    def run(self, ctx: AttackContext) -> AttackResult:
        ref = references(ctx, self.num_shadows, self.statistic, self.shadows)
        score = self.score(ref)
        ev = ref.eval_rows()
        mu_in = masked_mean(ref.shadow_stats, ref.inside)
        mu_out, sd_out = gaussian_fit(ref.shadow_stats, ~ref.inside, self.variance)
        offline = (ref.target_stats - mu_out) / sd_out
        # offline needs no IN shadow, and may have too few to fit one (shadows.paths)
        sd_in = (
            gaussian_fit(ref.shadow_stats, ref.inside, self.variance)[1]
            if self.mode == "online"
            else None
        )
        diagnostics = {
            **ref.diagnostics(),
            "mode": self.mode,
            "variance": self.variance,
            # how far training moves a pair's statistic in the shadows, and the target's
            # member / non-member difference: far apart (i.i.d. splits) = miscalibrated shadows
            "shadow_in_minus_out": float(np.mean(mu_in[ev] - mu_out[ev])),
            "target_member_minus_nonmember": float(
                ref.target_stats[ref.rows(MEMBER_EVAL)].mean()
                - ref.target_stats[ref.rows(NONMEMBER_EVAL)].mean()
            ),
            **held_out_check(ref),
            "nonmember_out_z": float(np.mean(offline[ref.rows(NONMEMBER_EVAL)])),
            # the fitted spreads: unequal IN and OUT spreads bend the online score (quadratic in s)
            "sigma_in": None if sd_in is None else float(np.nanmean(sd_in[ev])),
            "sigma_out": float(np.nanmean(sd_out[ev])),
        }
        n_mem = len(ctx.features[MEMBER_EVAL].uids)
        return AttackResult(score[:n_mem], score[n_mem:], diagnostics)
