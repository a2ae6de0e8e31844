"""CLMIA adapted to CLIP: contrastive encoder on unlabelled features + head on WSA pseudo-labels."""

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from mia.attacks.base import NotApplicable
from mia.attacks.clmia import CLMIA, nt_xent
from mia.features import SplitFeatures
from tests.helpers.attacks import (
    assert_null,
    assert_planted,
    feature_context,
    make_attack,
    shifted_members,
)
from tests.helpers.config import compose_config

FAST = {
    "epochs": 2,
    "head_epochs": 20,
}  # mechanics tests: what is checked does not need a trained model


pytestmark = pytest.mark.usefixtures("one_thread")


def test_clmia_planted(planted_features):
    result = make_attack("clmia").run(planted_features)
    d = result.diagnostics
    # the shared fixture does produce pseudo-members, mostly real ones
    assert d["n_pseudo_members"] > 100 and d["pseudo_member_false_share"] < 0.4
    assert d["contrastive_loss"] < d["contrastive_loss_first"]  # the encoder did learn something
    assert d["n_contrastive"] == 300 + 300 + 600 + 600
    json.dumps(d)  # plain python types only: it goes into results.json
    assert_planted(result)


def test_clmia_null():
    """On a null draw of its own: conftest's null_features (seed 0) is marginal for every attack
    that reads the cosine (CSA itself measures 0.542, 95% CI [0.497, 0.583]), and clmia, which
    reads the same cosine, lands either side of the bar with its batch order. Seed 1: CSA 0.505."""
    assert_null(make_attack("clmia").run(feature_context(planted=False, seed=1)))


def test_clmia_planted_in_embeddings():
    """Membership visible in the embeddings themselves, not only the cosine (see test_wsa.py)."""
    assert_planted(make_attack("clmia").run(shifted_members(feature_context(planted=True))))


def test_clmia_never_trains_head_on_evaluation_uids(planted_features):
    """The evaluation pairs may enter the unlabelled contrastive stage (contrastive_sets says
    which), never the labelled one: an evaluation uid among the head's training pairs is refused."""
    d = (
        make_attack("clmia", contrastive_sets=["aux_pool", "nonmember_known"], **FAST)
        .run(planted_features)
        .diagnostics
    )
    assert d["n_contrastive"] == 1200
    aux = planted_features.features["aux_pool"]
    leaked = aux.uids.astype(object)
    leaked[aux.cos.argmax()] = planted_features.uids("nonmember_eval")[0]
    planted_features.features["aux_pool"] = SplitFeatures(leaked, aux.image, aux.text, aux.cos)
    with pytest.raises(ValueError, match="evaluation uids"):
        make_attack("clmia", **FAST).run(planted_features)


def test_clmia_without_pseudo_members_is_not_applicable(planted_features):
    with pytest.raises(NotApplicable, match=r"lam=100: no aux_pool pair reaches"):
        make_attack("clmia", lam=100)(planted_features)


def test_clmia_seeded(planted_features):
    a, b = (
        make_attack("clmia", **FAST).run(planted_features),
        make_attack("clmia", **FAST).run(planted_features),
    )
    np.testing.assert_array_equal(a.nonmember_scores, b.nonmember_scores)
    assert a.diagnostics["contrastive_loss"] == b.diagnostics["contrastive_loss"]
    planted_features.seed = 1
    assert not np.array_equal(
        a.nonmember_scores, make_attack("clmia", **FAST).run(planted_features).nonmember_scores
    )


def test_nt_xent_prefers_matching_views():
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert nt_xent(z, z + 0.01 * torch.randn_like(z), 0.05) < nt_xent(
        z, z[torch.randperm(16)], 0.05
    )


def test_clmia_yaml_instantiates(tmp_path):
    cfg = compose_config("attack=clmia", "attack.clmia.dropout=0.2", f"paths.root_dir={tmp_path}")
    attack = instantiate(cfg.attack.clmia, _convert_="all")
    assert isinstance(attack, CLMIA) and attack.dropout == 0.2 and attack.temperature == 0.05
    assert attack.features == ["image", "text", "product", "cos"] and attack.encoder_dims == [
        256,
        128,
    ]
