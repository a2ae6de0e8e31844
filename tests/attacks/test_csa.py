from mia.attacks.csa import CSA
from tests.helpers.attacks import assert_null, assert_planted


def test_csa_planted_features(planted_features):
    assert_planted(CSA().run(planted_features))


def test_csa_null_features(null_features):
    assert_null(CSA().run(null_features))


def test_csa_planted_model(planted_model):
    assert_planted(CSA().run(planted_model))


def test_csa_null_model(null_model):
    assert_null(CSA().run(null_model))
