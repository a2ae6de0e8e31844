"""RMIA (offline and online) on the trained fixture and on synthetic statistics.

The fixtures and the shadows are those of test_lira.py (same pool, same settings: one set of 8
shadows at the target's scale serves both files, and the null tests reuse the shadows.size=pool
set; see its docstring). Measured on planted_model with 8 shadows: offline
(a tuned to 0.8) 0.930 AUC, online 0.940; with 4 shadows 0.915 and 0.937.
"""

import json

import numpy as np
import pytest
from hydra.utils import instantiate

from mia.attacks.rmia import RMIA, reference_log_prob, tune_offline_a
from mia.validate import ConfigError
from tests.helpers.attacks import (
    NUM_SHADOWS,
    assert_null,
    assert_planted,
    make_attack,
    result_of,
    run_with_shadows,
    synthetic_references,
)
from tests.helpers.config import compose_config

TARGET = {"size": "target", "pool": None, "seed": 0}  # conf/shadows/default.yaml
POOL = {**TARGET, "size": "pool"}  # the shadows of before shadows.size existed


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_rmia_planted_model(planted_model, mode):
    res = run_with_shadows(make_attack("rmia", num_shadows=NUM_SHADOWS, mode=mode), planted_model)
    assert_planted(res)
    json.dumps(res.diagnostics)  # results.json-ready: plain python types only
    d = res.diagnostics
    assert d["mode"] == mode and d["num_shadows"] == NUM_SHADOWS and d["statistic"] == "logodds"
    assert d["num_z"] == len(planted_model.uids("nonmember_known"))  # 1000 asked, 150 held
    if mode == "offline":
        assert d["offline_a"] in [float(a) for a in d["offline_a_tuning_auc"]]


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_rmia_null_model(pool_null, mode):
    res = run_with_shadows(
        make_attack("rmia", num_shadows=NUM_SHADOWS, mode=mode, shadows=POOL), pool_null
    )
    assert res.diagnostics["shadows_trained"] == 0  # the planted pool's shadows, reused
    assert_null(res)


def test_rmia_rerun_trains_no_shadow(planted_model):
    first = run_with_shadows(make_attack("rmia", num_shadows=NUM_SHADOWS), planted_model)
    second = run_with_shadows(make_attack("rmia", num_shadows=NUM_SHADOWS), planted_model)
    assert second.diagnostics["shadows_trained"] == 0
    np.testing.assert_array_equal(second.member_scores, first.member_scores)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_rmia_synthetic(mode):
    planted = synthetic_references(planted=True)
    assert_planted(
        result_of(planted, make_attack("rmia", num_shadows=8, mode=mode).score(planted, seed=0))
    )
    null = synthetic_references(planted=False)
    assert_null(result_of(null, make_attack("rmia", num_shadows=8, mode=mode).score(null, seed=0)))


def test_offline_a_tuning_finds_the_shift():
    # Synthetic training multiplies Pr(x) by about e: Pr_OUT alone (a = 1) is the right reference;
    # a = 0 halves their weight.
    ref = synthetic_references(planted=True)
    a, auc = tune_offline_a(ref.shadow_stats, ref.inside)
    assert a >= 0.8 and auc[a] > auc[0.0]
    with pytest.raises(ConfigError, match="num_shadows"):
        tune_offline_a(ref.shadow_stats[:2], ref.inside[:2])


def test_reference_probability_rules():
    probs = np.array([[0.2, 0.9], [0.4, 0.1]])
    inside = np.array([[True, False], [False, True]])
    np.testing.assert_allclose(np.exp(reference_log_prob(probs, inside, "online", 0.3)), [0.3, 0.5])
    np.testing.assert_allclose(
        np.exp(reference_log_prob(probs, inside, "offline", 1.0)), [0.4, 0.9]
    )
    np.testing.assert_allclose(
        np.exp(reference_log_prob(probs, inside, "offline", 0.0)), [0.7, 0.95]
    )


def test_gamma_num_z_and_ties_are_honoured():
    ref = synthetic_references(planted=True)
    plain = make_attack("rmia", num_shadows=8, num_z=10, offline_a=1.0, break_ties=False)
    s1 = plain.score(ref, seed=0)
    assert np.allclose(s1 * 10, np.round(s1 * 10))  # steps of 1 / num_z
    assert plain.used == {"offline_a": 1.0, "num_z": 10}
    s2 = make_attack(
        "rmia", num_shadows=8, num_z=10, offline_a=1.0, gamma=4.0, break_ties=False
    ).score(ref, seed=0)
    assert (s2 <= s1).all() and (s2 < s1).any()  # a higher bar dominates fewer z
    broken = make_attack("rmia", num_shadows=8, num_z=10, offline_a=1.0).score(ref, seed=0)
    assert (np.floor(broken * 10 + 1e-9) == np.round(s1 * 10)).all()  # ties ordered within a step
    assert len(np.unique(broken)) > len(np.unique(s1))
    assert not np.array_equal(
        s1,
        make_attack("rmia", num_shadows=8, num_z=10, offline_a=1.0, break_ties=False).score(
            ref, seed=1
        ),
    )


def test_rmia_config_and_validation():
    cfg = compose_config("attack=rmia", "logger=none")
    attack = instantiate(cfg.attack.rmia, _convert_="all")
    assert isinstance(attack, RMIA) and attack.mode == "offline" and attack.offline_a == "auto"
    assert (attack.gamma, attack.num_z) == (cfg.attack.rmia.gamma, cfg.attack.rmia.num_z)
    assert attack.shadows.size == cfg.shadows.size == "target"
    for key, bad in [
        ("mode", "both"),
        ("offline_a", 1.5),
        ("offline_a", "half"),
        ("gamma", 0),
        ("shadows.size", "half"),
    ]:
        with pytest.raises(ConfigError, match=rf"attack\.rmia\.{key}"):
            make_attack(
                "rmia",
                **(
                    {key: bad}
                    if "." not in key
                    else {"shadows": {**TARGET, key.split(".")[1]: bad}}
                ),
            )
