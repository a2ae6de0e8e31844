"""LiRA (online and offline) and the shadow machinery it shares with RMIA (mia/attacks/shadows.py).

Fixtures:
- planted_model (conftest) with NUM_SHADOWS shadows: each trains, like the target, for 30 epochs,
  on 275 of the 550 pool pairs. Measured: online 0.946 AUC (0.924 with 4 shadows), offline 0.893.
- pool_null (conftest): the null condition built from the same pool, so it reuses those shadows
  instead of training 8 more for conftest's null_model (whose pool differs): member_eval /
  nonmember_eval are two random halves of the pool's real non-members (nonmember_eval + the
  non-member half of aux_pool), and the target's members move into aux_pool. The ground truth is
  used to build the fixture only, never by the attack.
- synthetic References (no model): a per-pair difficulty that every model shares dominates the
  raw statistic, and training adds a fixed shift. This is where offline LiRA is tested against
  the 0.9 bar: on planted_model the target's members sit at a similarity ceiling, so calibrating
  by the OUT shadows spreads them out and offline LiRA stays below the raw cosine (0.893 vs 0.909
  with 8 shadows; see mia/attacks/lira.py). That regime is kept as its own, lower, regression
  check (test_lira_offline_planted_model_regression), not passed off as the planted bar.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from mia.attacks.lira import LiRA
from mia.attacks.shadows import halves, masked_mean, pool, references
from mia.validate import ConfigError
from tests.helpers.attacks import make_attack, NUM_SHADOWS, assert_null, assert_planted, auc_of, result_of, synthetic_references
from tests.helpers.config import compose_config


# --- the shadows: halves, training sets, cache -------------------------------------------------

def test_halves_are_balanced_complementary_and_reusable():
    uids = np.array([f"u{i}" for i in range(101)])
    inside = halves(uids, 8, seed=3)
    assert inside.shape == (8, 101)
    assert (inside.sum(0) == 4).all()                       # every pair IN for exactly half
    assert (inside[0::2] ^ inside[1::2]).all()              # 2j and 2j+1 complementary
    assert set(inside.sum(1)) == {50, 51}                   # halves
    assert (halves(uids, 4, seed=3) == inside[:4]).all()    # more shadows reuse the first ones
    assert not (halves(uids, 8, seed=4) == inside).all()    # seeded
    perm = np.random.default_rng(0).permutation(101)        # membership follows the uid, not the order
    assert (halves(uids[perm], 8, seed=3) == inside[:, perm]).all()
    with pytest.raises(ConfigError, match="num_shadows=3: an even number"):
        halves(uids, 3, seed=0)


def test_masked_mean_averages_each_pair_over_its_own_shadows():
    stats = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    inside = np.array([[True, False], [True, True], [False, True]])
    np.testing.assert_array_equal(masked_mean(stats, inside), [2.0, 5.0])
    np.testing.assert_array_equal(masked_mean(stats, ~inside), [5.0, 2.0])


def test_each_eval_pair_is_in_exactly_the_shadows_that_trained_on_it(planted_model):
    ref = references(planted_model, NUM_SHADOWS)
    uids, _ = pool(planted_model)
    assert (ref.uids == uids).all()
    for m, d in enumerate(ref.dirs):
        trained = set(Path(d, "trained_uids.txt").read_text().split())
        assert trained == set(uids[ref.inside[m]])            # each shadow trained on exactly its half
    ev = ref.eval_rows()
    assert (ref.inside[:, ev].sum(0) == NUM_SHADOWS // 2).all()
    diag = ref.diagnostics()
    assert diag["mean_in_per_eval_pair"] == diag["mean_out_per_eval_pair"] == NUM_SHADOWS / 2
    assert len(set(ref.keys)) == NUM_SHADOWS


def test_rerun_trains_no_shadow(planted_model):
    first = make_attack("lira", num_shadows=NUM_SHADOWS).run(planted_model)
    second = make_attack("lira", num_shadows=NUM_SHADOWS).run(planted_model)
    assert second.diagnostics["shadows_trained"] == 0
    assert second.diagnostics["shadow_keys"] == first.diagnostics["shadow_keys"]
    np.testing.assert_allclose(second.member_scores, first.member_scores)


# --- LiRA on the trained fixture ---------------------------------------------------------------

def test_lira_online_planted_model(planted_model):
    res = make_attack("lira", num_shadows=NUM_SHADOWS, mode="online").run(planted_model)
    assert_planted(res)
    json.dumps(res.diagnostics)  # results.json-ready: plain python types only
    assert res.diagnostics["mode"] == "online" and res.diagnostics["statistic"] == "fisher"
    assert res.diagnostics["num_shadows"] == NUM_SHADOWS


def test_lira_offline_planted_model_regression(planted_model):
    """Not the planted bar (see the module docstring): a guard that offline LiRA still works."""
    assert auc_of(make_attack("lira", num_shadows=NUM_SHADOWS, mode="offline").run(planted_model))["auc"] > 0.85


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_lira_null_model(pool_null, mode):
    res = make_attack("lira", num_shadows=NUM_SHADOWS, mode=mode).run(pool_null)
    assert res.diagnostics["shadows_trained"] == 0  # the planted pool's shadows, reused
    assert_null(res)


# --- LiRA's scoring on synthetic statistics ----------------------------------------------------

@pytest.mark.parametrize("mode,variance", [("online", "global"), ("offline", "global"), ("offline", "per_pair")])
def test_lira_synthetic_planted(mode, variance):
    ref = synthetic_references(planted=True)
    assert auc_of(result_of(ref, ref.target_stats[ref.eval_rows()]))["auc"] < 0.8  # raw statistic: weak
    assert_planted(result_of(ref, make_attack("lira", num_shadows=8, mode=mode, variance=variance).score(ref)))


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_lira_synthetic_null(mode):
    ref = synthetic_references(planted=False)
    assert_null(result_of(ref, make_attack("lira", num_shadows=8, mode=mode).score(ref)))


def test_lira_config_and_validation():
    cfg = compose_config("attack=lira", "logger=none")
    attack = instantiate(cfg.attack.lira, _convert_="all")
    assert isinstance(attack, LiRA) and attack.mode == "online" and attack.statistic == "fisher"
    assert attack.num_shadows == cfg.attack.lira.num_shadows
    with pytest.raises(ConfigError, match=r"attack\.lira\.mode"):
        make_attack("lira", mode="both")
    with pytest.raises(ConfigError, match=r"attack\.lira\.variance"):
        make_attack("lira", variance="local")
    with pytest.raises(ConfigError, match=r"attack\.lira\.num_shadows"):
        make_attack("lira", num_shadows=True)  # a bool is not a count
