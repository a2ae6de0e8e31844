"""txtagree on stand-in towers whose agreement is planted (tests/helpers/attacks.py
modality_context), and on the trained fixture's null. On the memorised planted_model it scores 0.61:
the bar of 0.9 is met on the planted stand-in instead (docs/design.md §4.13, §9.1)."""

from dataclasses import replace

import numpy as np
import pytest

from mia.attacks.txtagree import perturb
from mia.validate import ConfigError
from tests.helpers.attacks import assert_null, assert_planted, auc_of, make_attack


def test_txtagree_planted(planted_modality):
    result = make_attack("txtagree").run(planted_modality)
    assert_planted(result)
    d = result.diagnostics["mean_agreement"]
    assert d["member"] > d["nonmember"]


def test_txtagree_to_original_planted(planted_modality):
    assert_planted(make_attack("txtagree", statistic="to_original").run(planted_modality))


def test_txtagree_null(null_modality):
    assert_null(make_attack("txtagree").run(null_modality))


def test_txtagree_null_model(null_model):
    assert_null(make_attack("txtagree").run(null_model))


def test_txtagree_members_agree_more_on_the_trained_fixture(planted_model):
    # Weak on the memorised fixture, but on the members' side and above chance.
    assert auc_of(make_attack("txtagree").run(planted_model))["auc_ci95"][0] > 0.5


def test_txtagree_never_reads_an_image(planted_modality):
    from PIL import Image

    plain = make_attack("txtagree", repeats=2).run(planted_modality)
    black = Image.new("RGB", (16, 16))
    raw = {
        s: ([black] * len(images), captions)
        for s, (images, captions) in planted_modality._raw.items()
    }
    blind = make_attack("txtagree", repeats=2).run(replace(planted_modality, _raw=raw))
    np.testing.assert_array_equal(plain.member_scores, blind.member_scores)


def test_perturb_is_seeded_and_keeps_a_word():
    caption = "a large red circle on the top left, photo by vezi dana"
    a = [perturb(caption, np.random.default_rng(s), 0.3, 1) for s in range(20)]
    assert a == [perturb(caption, np.random.default_rng(s), 0.3, 1) for s in range(20)]
    assert len(set(a)) > 10 and all(a)
    assert perturb("word", np.random.default_rng(0), 0.99, 3) == "word"
    assert sorted(perturb(caption, np.random.default_rng(0), 0.0, 2).split()) == sorted(
        caption.split()
    )


@pytest.mark.parametrize(
    "override, key",
    [
        ({"word_dropout": 1.0}, "word_dropout"),
        ({"swaps": -1}, "swaps"),
        ({"word_dropout": 0.0, "swaps": 0}, "word_dropout"),
        ({"statistic": "max"}, "statistic"),
        ({"repeats": 1}, "repeats"),
    ],
)
def test_txtagree_bad_settings_name_their_key(override, key):
    with pytest.raises(ConfigError, match=f"attack.txtagree.{key}"):
        make_attack("txtagree", **override)
