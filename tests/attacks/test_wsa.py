"""WSA (Ko et al. / Gomez variants).

Why a second planted fixture: `planted_features` puts membership only in the cosine f_img . f_txt.
Ko's variant sees [f_img, f_txt] and would have to learn that inner product with an MLP from ~1,000
pseudo-labelled pairs; it does not (AUC 0.56 measured), and Gomez's published 5 epochs of batch 1024
are 5 optimiser steps on so small a pool (AUC 0.54). WSA's premise (Ko et al. §5.2, "discriminative
feature alignment") is that members are also recognisable in the embeddings themselves, so
`shifted_members` adds that: members' image and text embeddings lean along one shared direction,
which also raises their cosine, so pseudo-labelling by cosine still finds them. Gomez's variant is
tested on a pool large enough (20k + 20k) for its published schedule to take ~200 steps, the regime
it was made for.
"""

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from mia.attacks.base import AttackContext, NotApplicable
from mia.attacks.weak_supervision import (
    labelled_training_set,
    pseudo_label,
    pseudo_label_diagnostics,
    seeded,
    shuffled_batches,
)
from mia.attacks.wsa import WSA
from mia.features import SplitFeatures
from mia.validate import ConfigError
from tests.helpers.attacks import (
    FeatureSplits,
    assert_null,
    assert_planted,
    feature_context,
    make_attack,
    shifted_members,
)
from tests.helpers.config import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- planted / null


def test_wsa_ko_planted():
    result = make_attack("wsa", variant="ko").run(shifted_members(feature_context(planted=True)))
    assert_planted(result)
    assert result.diagnostics["n_inputs"] == 64 and 1 <= result.diagnostics["epochs"] <= 15
    json.dumps(result.diagnostics)  # plain python types only: it goes into results.json


def test_wsa_gomez_planted():
    ctx = shifted_members(feature_context(planted=True, n_known=20_000, n_aux=20_000))
    result = make_attack("wsa", variant="gomez").run(ctx)
    assert_planted(result)
    assert result.diagnostics["n_inputs"] == 65 and result.diagnostics["epochs"] == 5


@pytest.mark.parametrize("variant", ["ko", "gomez"])
def test_wsa_null(null_features, variant):
    assert_null(make_attack("wsa", variant=variant).run(null_features))


def test_wsa_planted_features(planted_features):
    """On the shared fixture: pseudo-labelling works (many pseudo-members, mostly true members), and
    with the element-wise product as input (`features`), where the cosine is a sum the MLP can read,
    Ko's MLP does score members above non-members."""
    result = make_attack("wsa", variant="ko", features=["product"]).run(planted_features)
    d = result.diagnostics
    assert (
        d["n_pseudo_members"] > 100
        and d["pseudo_member_false_share"] < 0.4
        and d["pseudo_member_recall"] > 0.9
    )
    assert d["features"] == ["product"] and d["n_inputs"] == 32
    assert_planted(result)


# ----------------------------------------------------------------------------- mechanics


def test_wsa_never_trains_on_evaluation_uids(planted_features):
    for variant in ("ko", "gomez"):
        _, _, uids, _ = make_attack("wsa", variant=variant).training_set(planted_features)
        evaluated = np.concatenate(
            [planted_features.uids("member_eval"), planted_features.uids("nonmember_eval")]
        )
        assert len(uids) and not np.isin(uids, evaluated).any()
        assert np.isin(
            uids,
            np.concatenate(
                [planted_features.uids("nonmember_known"), planted_features.uids("aux_pool")]
            ),
        ).all()
    # and a split that leaks an evaluation pair into the pool is refused, not silently trained on
    aux = planted_features.features["aux_pool"]
    leaked = aux.uids.astype(
        object
    )  # object: a longer uid must not be truncated to the array dtype
    leaked[aux.cos.argmax()] = planted_features.uids("member_eval")[0]
    planted_features.features["aux_pool"] = SplitFeatures(leaked, aux.image, aux.text, aux.cos)
    with pytest.raises(ValueError, match="evaluation uids"):
        make_attack("wsa").run(planted_features)


def _known_truth_context():
    """D_no cosines 0.1..0.5: mu 0.3, sample std sqrt(0.025). With lam=1 the threshold is 0.4581, so
    aux cosines [0.2, 0.46, 0.5, 0.6, 0.9, 0.45] give pseudo-members at rows 1-4, one of them (row
    1) a true non-member."""
    cos = {
        "nonmember_known": [0.1, 0.2, 0.3, 0.4, 0.5],
        "aux_pool": [0.2, 0.46, 0.5, 0.6, 0.9, 0.45],
        "member_eval": [0.7, 0.8],
        "nonmember_eval": [0.3, 0.4],
    }
    rng = np.random.default_rng(0)
    feats = {
        name: SplitFeatures(
            np.array([f"{name}{i}" for i in range(len(c))]),
            rng.normal(size=(len(c), 4)),
            rng.normal(size=(len(c), 4)),
            np.array(c),
        )
        for name, c in cos.items()
    }
    aux_is_member = np.array([False, False, True, True, True, True])
    return AttackContext(features=feats, splits=FeatureSplits(feats, aux_is_member), target=None)


def test_pseudo_label_diagnostics_known_truth():
    ctx = _known_truth_context()
    pl = pseudo_label(ctx, lam=1.0)
    np.testing.assert_array_equal(pl.members, [1, 2, 3, 4])
    d = pseudo_label_diagnostics(ctx, pl)
    assert d["mu"] == pytest.approx(0.3) and d["sigma"] == pytest.approx(np.sqrt(0.025))
    assert d["threshold"] == pytest.approx(0.3 + np.sqrt(0.025))
    assert d["n_pseudo_members"] == 4 and d["n_known"] == 5
    assert d["pseudo_member_false_share"] == pytest.approx(0.25) and d[
        "pseudo_member_recall"
    ] == pytest.approx(0.75)
    # known_size uses the first D_no pairs only: 0.1, 0.2, 0.3 -> mu 0.2, std 0.1, threshold 0.3
    pl3 = pseudo_label(ctx, lam=1.0, known_size=3)
    assert pl3.mu == pytest.approx(0.2) and pl3.threshold == pytest.approx(0.3)
    np.testing.assert_array_equal(pl3.members, [1, 2, 3, 4, 5])
    x, y, uids = labelled_training_set(ctx, pl3, ["image", "text", "cos"])
    assert x.shape == (8, 9) and y.tolist() == [0] * 3 + [1] * 5 and uids[0] == "nonmember_known0"


def test_wsa_without_pseudo_members_is_not_applicable_and_says_why(planted_features):
    """No pair reaching the threshold is an outcome of the data (shift spreads D_no), not a bad
    setting."""
    with pytest.raises(
        NotApplicable, match=r"lam=100: no aux_pool pair reaches cos >= mu \+ lam \* sigma"
    ):
        make_attack("wsa", lam=100)(planted_features)


def test_wsa_seeded_and_settings_honoured(planted_features):
    a, b = (
        make_attack("wsa", variant="gomez").run(planted_features),
        make_attack("wsa", variant="gomez").run(planted_features),
    )
    np.testing.assert_array_equal(a.member_scores, b.member_scores)
    planted_features.seed = 1
    assert not np.array_equal(
        a.member_scores, make_attack("wsa", variant="gomez").run(planted_features).member_scores
    )
    d = (
        make_attack("wsa", variant="ko", known_size=100, ko={"max_epochs": 2, "patience": 5})
        .run(planted_features)
        .diagnostics
    )
    assert d["n_known"] == 100 and d["epochs"] == 2
    assert (
        make_attack("wsa", variant="gomez", gomez={"epochs": 1})
        .run(planted_features)
        .diagnostics["epochs"]
        == 1
    )
    with pytest.raises(ConfigError, match=r"attack\.wsa\.gomez=.*unknown keys \['max_epochs'\]"):
        make_attack("wsa", variant="gomez", gomez={"max_epochs": 3})
    with pytest.raises(ConfigError, match=r"attack\.wsa\.variant"):
        make_attack("wsa", variant="nope")


def test_seeded_training_restores_the_callers_rng():
    # wsa and clmia seed their classifier's init and batch order from the job seed alone, and the
    # job's own torch RNG goes on as if they had not run.
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    with seeded(3) as g:
        init, batches = torch.rand(1), shuffled_batches(10, 4, g)
    assert torch.equal(torch.rand(2), expected)
    with seeded(3) as g:
        assert torch.equal(torch.rand(1), init)
        assert all(
            torch.equal(a, b) for a, b in zip(shuffled_batches(10, 4, g), batches, strict=True)
        )
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(torch.cat(batches).tolist()) == list(
        range(10)
    )


def test_wsa_yaml_instantiates(tmp_path):
    cfg = compose_config("attack=wsa", "attack.wsa.variant=gomez", f"paths.root_dir={tmp_path}")
    attack = instantiate(cfg.attack.wsa, _convert_="all")
    assert (
        isinstance(attack, WSA)
        and attack.variant == "gomez"
        and attack.features == ["image", "text", "cos"]
    )
    assert attack.settings == {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 1024, "epochs": 5}
