"""mia/evaluation/scoring.py: CSA's scores for the comparison are the evaluation cosines, and each
attack's D_no scores for its calibrated thresholds come from D_no scored alone (per_pair attacks:
the cosines for csa; bit for bit a second run's), a second run with D_no as members (flagged where
the attack fits on D_no), or nowhere (shadow attacks, blind)."""

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, replace

import numpy as np
import pytest

import mia.attacks
from mia.attacks.base import Attack, AttackResult
from mia.attacks.csa import CSA
from mia.data.splits import EVAL_SETS, MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN
from mia.evaluation import metrics, scoring
from tests.helpers.attacks import feature_context, make_attack, untrained_model_context


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


def test_csa_scores_are_the_evaluation_cosines():
    ctx = context()
    res = CSA()(ctx)
    member, nonmember = scoring.csa_scores(ctx)
    assert np.array_equal(res.member_scores, member) and np.array_equal(
        res.nonmember_scores, nonmember
    )
    assert scoring.compare_with_csa(res, ctx, 50, 0)["delta_auc_ci95"] == [0.0, 0.0]


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
        "Fits", (Aligned,), {"name": "gradnorm"}
    )()  # an attack that fits on D_no is flagged
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


def test_shadow_attacks_and_blind_get_no_thresholds_and_say_why():
    ctx = context()
    shadowed = type("Shadowed", (Aligned,), {"name": "lira", "needs_shadows": True})()
    cal, why = scoring.calibrate(shadowed, shadowed(ctx), ctx)
    assert cal is None and "shadow" in why
    blind = type("Blindish", (Aligned,), {"name": "blind"})()
    cal, why = scoring.calibrate(blind, blind(ctx), ctx)
    assert cal is None and "evaluation labels" in why
    wsa = type("Wsaish", (Aligned,), {"name": "wsa"})()
    cal, why = scoring.calibrate(wsa, wsa(ctx), ctx)
    assert cal is None and "refuses to score a pair it trained on" in why


def test_wsa_refuses_d_no_as_members_which_is_why_it_gets_no_thresholds():
    ctx = context()
    wsa = make_attack("wsa")
    with pytest.raises(ValueError, match="evaluation uids are in D_no"):
        wsa(ctx.with_members(ctx.features[NONMEMBER_KNOWN]))
    cal, why = scoring.calibrate(wsa, wsa(ctx), ctx)
    assert cal is None and why == scoring.NOT_CALIBRATED["wsa"]


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


def test_every_attack_that_reads_known_non_members_is_flagged():
    """An attack module that reads D_no (NONMEMBER_KNOWN, or weak supervision's pseudo-labels from
    it) defines attacks that fit on it: each must be flagged (FITS_ON_KNOWN), have no thresholds
    (NOT_CALIBRATED) or train shadows (no thresholds either)."""
    found = {}
    for module, cls in attack_classes():
        reads = any(w in inspect.getsource(module) for w in ("NONMEMBER_KNOWN", "pseudo_label"))
        found[cls.name] = (reads, cls.needs_shadows)
    for name, (reads, shadows) in found.items():
        if reads and not shadows:
            assert name in scoring.FITS_ON_KNOWN | set(scoring.NOT_CALIBRATED), (
                f"{name} reads D_no and is neither in FITS_ON_KNOWN nor in NOT_CALIBRATED"
            )
    assert scoring.FITS_ON_KNOWN <= set(found), "FITS_ON_KNOWN names an attack that does not exist"
    assert set(scoring.NOT_CALIBRATED) <= set(found)


def test_calibrated_thresholds_of_a_planted_attack_hold_their_fpr_on_d_no():
    ctx = context()
    cal, _ = scoring.calibrate(CSA(), CSA()(ctx), ctx)
    known = ctx.features[NONMEMBER_KNOWN].cos
    assert np.mean(known > cal[0]["threshold"]) <= 0.01
    assert cal[0] == {
        **metrics.calibrated_thresholds(known, *scoring.csa_scores(ctx))[0],
        "threshold_from_training_pairs": False,
    }


def test_unshifted_auc_leaves_the_swapped_nonmembers_out():
    """scoring.unshifted: the AUC of the members against the unswapped non-members alone, counted by
    hand, with its interval, its count and its paired difference from CSA on the same pairs."""
    rng = np.random.default_rng(0)
    member, nonmember = rng.normal(1, 1, 300), rng.normal(0, 1, 400)
    swapped = rng.random(400) < 0.4
    nonmember[swapped] -= 3  # swapped pairs are easy to tell from members
    csa = rng.normal(0.5, 1, 300), rng.normal(0, 1, 400)
    got = scoring.unshifted((member, nonmember), swapped, csa, 50, 0)

    def by_hand(
        m, n
    ):  # the share of member / non-member pairs ranked right (no ties in continuous draws)
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
