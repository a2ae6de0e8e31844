from tests.helpers.attacks import assert_null, assert_planted, make_attack


def test_csa_planted_features(planted_features):
    assert_planted(make_attack("csa").run(planted_features))


def test_csa_null_features(null_features):
    assert_null(make_attack("csa").run(null_features))


def test_csa_planted_model(planted_model):
    assert_planted(make_attack("csa").run(planted_model))


def test_csa_null_model(null_model):
    assert_null(make_attack("csa").run(null_model))
