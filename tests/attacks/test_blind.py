"""Blind (caption-only) baseline. The feature fixtures carry no captions, so these contexts are
built here with captions of the embedded corpus prefilled in `_raw` (what `ctx.captions` reads):
planted = member captions from the i.i.d. corpus vs non-member captions from the shifted corpus (the
OOD condition this baseline exists to expose), null = two disjoint i.i.d. halves."""

import json

import numpy as np

from mia.attacks.base import AttackContext
from mia.data.synthetic import make_sample
from mia.features import SplitFeatures
from tests.helpers.attacks import assert_null, assert_planted, make_attack

N = 200


def caption_context(member_captions, nonmember_captions, seed=0):
    sets = {"member_eval": member_captions, "nonmember_eval": nonmember_captions}
    features = {
        name: SplitFeatures(np.array([f"{name}{i}" for i in range(len(c))]), None, None, None)
        for name, c in sets.items()
    }
    raw = {name: ([None] * len(c), list(c)) for name, c in sets.items()}
    return AttackContext(features=features, splits=None, target=None, seed=seed, _raw=raw)


def captions(indices, style):
    return [make_sample(int(i), seed=0, style=style)[1] for i in indices]


def test_blind_planted_ood_captions():
    ctx = caption_context(captions(range(N), "iid"), captions(range(N, 2 * N), "shifted"))
    result = make_attack("blind").run(ctx)
    assert_planted(result)
    assert len(result.member_scores) == len(result.nonmember_scores) == N
    # the shifted style's fixed wording ("backdrop", "image showing") is what gives it away
    assert {"backdrop", "image showing"} & set(result.diagnostics["nonmember_terms"])
    json.dumps(result.diagnostics)  # plain python types only: it goes into results.json


def test_blind_null_iid_captions():
    order = np.random.default_rng(0).permutation(2 * N)
    ctx = caption_context(captions(order[:N], "iid"), captions(order[N:], "iid"))
    assert_null(make_attack("blind").run(ctx))


def test_blind_null_model(null_model):
    """Captions of the real corpus read from its shards, two random halves of unseen pairs."""
    assert_null(make_attack("blind").run(null_model))


def test_blind_seeded_and_folds_honoured():
    ctx = caption_context(captions(range(N), "iid"), captions(range(N, 2 * N), "shifted"))
    a, b = make_attack("blind").run(ctx), make_attack("blind").run(ctx)
    np.testing.assert_array_equal(
        a.member_scores, b.member_scores
    )  # same seed, same folds, same scores
    assert np.all((a.member_scores >= 0) & (a.member_scores <= 1))
    assert make_attack("blind", folds=3).run(ctx).diagnostics["folds"] == 3
