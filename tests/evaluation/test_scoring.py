"""mia/evaluation/scoring.py: the reference's scores for the comparison (CSA's: the evaluation
cosines), and each attack's D_no scores for its calibrated thresholds from D_no scored alone
(per_pair attacks: the cosines for csa; bit for bit a second run's), a second run with D_no as
members (flagged where the attack reads D_no), or nowhere (shadow attacks, Attack.uncalibrated). The
traits those rules read are held true by running every attack without D_no."""

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import mia.attacks
from mia.attacks.base import Attack, AttackResult
from mia.attacks.csa import CSA
from mia.attacks.weak_supervision import TRAINS_ON_KNOWN
from mia.data.splits import EVAL_SETS, MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN
from mia.evaluation import metrics, scoring
from tests.helpers.attacks import (
    feature_context,
    make_attack,
    untrained_model_context,
    with_logit_scale,
)
from tests.helpers.config import CONF


@dataclass
class Splits:  # AttackContext.with_members replaces member_eval in a dataclass
    member_eval: np.ndarray
    nonmember_eval: np.ndarray
    nonmember_known: np.ndarray
    aux_pool: np.ndarray
    aux_is_member: np.ndarray


def context():
    ctx = feature_context(planted=True, n=200, n_known=1000, n_aux=100)
    return replace(ctx, splits=Splits(*(ctx.uids(s) for s in EVAL_SETS), ctx.splits.aux_is_member))


class Aligned(Attack):
    """The cosine plus a constant, scored pair by pair: CSA under another name."""

    name = "aligned"

    def run(self, ctx):
        return AttackResult(
            ctx.features[MEMBER_EVAL].cos + 1.0, ctx.features[NONMEMBER_EVAL].cos + 1.0
        )


def test_csa_as_the_reference_scores_the_evaluation_cosines():
    ctx = context()
    res = CSA()(ctx)
    member, nonmember = scoring.reference_scores(CSA(), ctx)
    assert np.array_equal(member, ctx.features[MEMBER_EVAL].cos)
    assert np.array_equal(nonmember, ctx.features[NONMEMBER_EVAL].cos)
    assert scoring.compare(res, (member, nonmember), 50, 0)["delta_auc_ci95"] == [0.0, 0.0]


def test_csa_is_calibrated_on_the_known_cosines_without_a_second_run():
    ctx = context()
    known, fitted, why = scoring.known_scores(CSA(), ctx)
    assert np.array_equal(known, ctx.features[NONMEMBER_KNOWN].cos) and not fitted and why is None
    cal, why = scoring.calibrate(CSA(), CSA()(ctx), ctx)
    assert why is None and [e["fpr_target"] for e in cal] == [1e-2, 1e-3]
    assert cal[0]["threshold"] == pytest.approx(
        np.quantile(ctx.features[NONMEMBER_KNOWN].cos, 0.99)
    )
    assert cal[0]["threshold_from_training_pairs"] is False and cal[0]["n_known"] == 1000


def test_any_other_attack_scores_d_no_in_a_second_run_as_members():
    ctx = context()
    known, fitted, why = scoring.known_scores(Aligned(), ctx)
    np.testing.assert_array_equal(known, ctx.features[NONMEMBER_KNOWN].cos + 1.0)
    assert not fitted and why is None
    fits = type(
        "Fits", (Aligned,), {"reads_known_nonmembers": True}
    )()  # an attack that reads D_no is flagged
    cal, _ = scoring.calibrate(fits, fits(ctx), ctx)
    assert all(e["threshold_from_training_pairs"] for e in cal)


# Every per_pair attack (scores of a set that depend on that set alone), with settings that keep it
# quick. Not mcd: its dropout masks follow the label-blind order of the union of the scored pairs.
PER_PAIR = {
    "csa": {},
    "aea": {"repeats": 2},
    "imgagree": {"repeats": 4},
    "txtagree": {"repeats": 4},
}


@pytest.fixture(scope="module")
def model_ctx():
    ctx = untrained_model_context(n_eval=40, n_known=60)
    return replace(ctx, splits=Splits(*(ctx.uids(s) for s in EVAL_SETS), ctx.splits.aux_is_member))


def test_every_per_pair_attack_is_checked_against_a_second_run():
    assert {cls.name for _, cls in attack_classes() if cls.per_pair} == set(PER_PAIR)


@pytest.mark.parametrize("name", sorted(PER_PAIR))
def test_per_pair_attacks_score_d_no_alone_as_a_second_run_would(model_ctx, name):
    attack = make_attack(name, **PER_PAIR[name])
    result = attack(model_ctx)
    # Today's reference: the second run with D_no as member_eval (this context holds its pairs, no
    # shards).
    ctx = replace(model_ctx, _raw=dict(model_ctx._raw))
    second = ctx.with_members(ctx.features[NONMEMBER_KNOWN])
    ctx._raw[second._members_as] = ctx._raw[NONMEMBER_KNOWN]
    reference = np.asarray(attack(second).member_scores)
    known, fitted, why = scoring.known_scores(attack, model_ctx)
    assert np.array_equal(known, reference) and not fitted and why is None
    cal, why = scoring.calibrate(attack, result, model_ctx)
    assert why is None and cal == [
        {**e, "threshold_from_training_pairs": False}
        for e in metrics.calibrated_thresholds(
            reference, result.member_scores, result.nonmember_scores
        )
    ]


def test_an_attack_that_scores_its_pairs_together_scores_no_set_alone():
    with pytest.raises(TypeError, match="aligned scores its pairs together"):
        Aligned().score_set(context(), NONMEMBER_KNOWN)


def test_shadow_attacks_and_uncalibrated_ones_get_no_thresholds_and_say_why():
    ctx = context()
    shadowed = type("Shadowed", (Aligned,), {"needs_shadows": True})()
    cal, why = scoring.calibrate(shadowed, shadowed(ctx), ctx)
    assert cal is None and "shadow" in why
    refuses = type("Refuses", (Aligned,), {"uncalibrated": "cannot score D_no"})()
    cal, why = scoring.calibrate(refuses, refuses(ctx), ctx)
    assert cal is None and why == "cannot score D_no"
    blind = make_attack("blind")
    assert "evaluation labels" in scoring.known_scores(blind, ctx)[2]


def test_wsa_refuses_d_no_as_members_which_is_why_it_gets_no_thresholds():
    ctx = context()
    wsa = make_attack("wsa")
    with pytest.raises(ValueError, match="evaluation uids are in D_no"):
        wsa(ctx.with_members(ctx.features[NONMEMBER_KNOWN]))
    cal, why = scoring.calibrate(wsa, wsa(ctx), ctx)
    assert cal is None and why == TRAINS_ON_KNOWN


def attack_configs():
    """Every attack config of conf/attack/ that names one attack (not the lists all and
    no_shadows)."""
    return sorted(
        p.stem
        for p in (Path(CONF) / "attack").glob("*.yaml")
        if "_target_" in OmegaConf.load(p).get(p.stem, {})
    )


def attack_classes():
    """(module, class) of every attack defined in mia/attacks/."""
    for info in pkgutil.iter_modules(mia.attacks.__path__):
        module = importlib.import_module(f"mia.attacks.{info.name}")
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and issubclass(cls, Attack)
                and cls.__module__ == module.__name__
                and not inspect.isabstract(cls)
            ):
                yield module, cls


def without_known(ctx):
    """ctx with D_no gone: its features and its pairs. An attack that reads D_no fails on it."""
    return replace(
        ctx,
        features={k: v for k, v in ctx.features.items() if k != NONMEMBER_KNOWN},
        _raw={k: v for k, v in ctx._raw.items() if k != NONMEMBER_KNOWN},
    )


@pytest.mark.parametrize("name", [n for n in attack_configs() if not make_attack(n).needs_shadows])
def test_an_attack_reads_known_non_members_exactly_when_it_says_so(model_ctx, name):
    """Attack.reads_known_nonmembers (and so the flag on its calibrated thresholds) is held to what
    the attack does: run without D_no, an attack that declares it fails for want of D_no, and any
    other scores every pair as it did with D_no. Shadow attacks are left out: their reference pool
    holds D_no by construction (mia/attacks/shadows.py), and they get no thresholds."""
    attack = make_attack(name)
    if attack.reads_known_nonmembers:
        with pytest.raises(KeyError, match=NONMEMBER_KNOWN):
            attack(without_known(model_ctx))
    else:
        with_known, without = attack(model_ctx), attack(without_known(model_ctx))
        assert np.array_equal(with_known.member_scores, without.member_scores)
        assert np.array_equal(with_known.nonmember_scores, without.nonmember_scores)


def test_calibrated_thresholds_of_a_planted_attack_hold_their_fpr_on_d_no():
    ctx = context()
    cal, _ = scoring.calibrate(CSA(), CSA()(ctx), ctx)
    known = ctx.features[NONMEMBER_KNOWN].cos
    assert np.mean(known > cal[0]["threshold"]) <= 0.01
    assert cal[0] == {
        **metrics.calibrated_thresholds(known, *scoring.reference_scores(CSA(), ctx))[0],
        "threshold_from_training_pairs": False,
    }


def test_gradnorm_scores_d_no_in_evaluation_batches_and_its_thresholds_hold_their_fpr():
    """gradnorm (negatives=mixed) scores a pair among its batch-mates: D_no scored in batches of
    non-members alone (a second run with D_no as members) sets thresholds whose realised FPR lies
    far above its target; each D_no pair put in an evaluation batch gives the evaluation
    non-members an FPR whose Clopper-Pearson interval holds the target."""
    ctx = with_logit_scale(feature_context(planted=True, n=1000, n_known=2000, seed=1))
    ctx = replace(ctx, splits=Splits(*(ctx.uids(s) for s in EVAL_SETS), ctx.splits.aux_is_member))
    gradnorm, targets = make_attack("gradnorm"), (0.01, 0.05, 0.1)
    result = gradnorm(ctx)
    cal, why = scoring.calibrate(gradnorm, result, ctx, targets)
    assert why is None and all(e["threshold_from_training_pairs"] for e in cal)
    for e in cal:
        lo, hi = e["realised_fpr_ci95"]
        assert e["calibrated"] and lo <= e["fpr_target"] <= hi, e
    apart = np.asarray(gradnorm(ctx.with_members(ctx.features[NONMEMBER_KNOWN])).member_scores)
    second_run = metrics.calibrated_thresholds(
        apart, result.member_scores, result.nonmember_scores, targets
    )
    assert all(e["realised_fpr_ci95"][0] > e["fpr_target"] for e in second_run)


def test_unshifted_auc_leaves_the_swapped_nonmembers_out():
    """scoring.unshifted: the AUC of the members against the unswapped non-members alone, counted by
    hand, with its interval, its count and its paired difference from CSA on the same pairs."""
    rng = np.random.default_rng(0)
    member, nonmember = rng.normal(1, 1, 300), rng.normal(0, 1, 400)
    swapped = rng.random(400) < 0.4
    nonmember[swapped] -= 3  # swapped pairs are easy to tell from members
    csa = rng.normal(0.5, 1, 300), rng.normal(0, 1, 400)
    got = scoring.unshifted((member, nonmember), swapped, csa, 50, 0)

    # the share of member / non-member pairs ranked right (no ties in continuous draws)
    def by_hand(m, n):
        return float(np.mean(m[:, None] > n[None, :]))

    kept = ~swapped
    assert got["n_unshifted"] == kept.sum()
    assert got["auc_unshifted"] == pytest.approx(by_hand(member, nonmember[kept]), abs=1e-12)
    assert (
        got["auc_unshifted"] < by_hand(member, nonmember) - 0.1
    )  # the swapped pairs made the attack look better
    lo, hi = got["auc_unshifted_ci95"]
    assert lo < got["auc_unshifted"] < hi
    vs = got["vs_csa_unshifted"]
    assert vs["delta_auc"] == pytest.approx(
        by_hand(member, nonmember[kept]) - by_hand(csa[0], csa[1][kept]), abs=1e-12
    )
    assert "vs_csa_unshifted" not in scoring.unshifted(
        (member, nonmember), swapped, None, 50, 0
    )  # csa itself
    none = scoring.unshifted((member, nonmember), np.ones(400, bool), csa, 50, 0)
    assert none == {
        "auc_unshifted": None,
        "auc_unshifted_ci95": None,
        "n_unshifted": 0,
        "vs_csa_unshifted": None,
    }
    with pytest.raises(ValueError, match="399 swapped flags for 400"):
        scoring.unshifted((member, nonmember), swapped[:399], csa, 50, 0)
