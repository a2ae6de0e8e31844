"""mia/training/optim.py and stage.py: the wsd schedule's path before its cooldown does not depend
on T, so a target of T epochs branched off a longer run's stable phase is, bit for bit, the target a
run of T epochs trains alone; the cosine schedule is as it was."""

import json
import logging
import math
from types import SimpleNamespace

import pytest
import torch

from mia import distributed
from mia.pipeline import prepare
from mia.training.optim import lr_factor, optimizer
from mia.training.spec import TrainSpec, stable_key, target_key
from mia.training.stage import TrainHere
from mia.validate import ConfigError
from tests.helpers.config import SMALL, compose_config


def _spec(**train):
    base = dict(model={"name": "tiny"}, epochs=10, batch_size=8, lr=1e-3, weight_decay=0.1)
    return TrainSpec(**{**base, "warmup_steps": 5, **train})


def test_cosine_is_warm_up_then_a_cosine_over_the_job_s_own_steps():
    f = lr_factor(_spec(), 100)
    assert [f(s) for s in range(5)] == [(s + 1) / 5 for s in range(5)]
    assert f(50) == 0.5 * (1 + math.cos(math.pi * 45 / 95))


def test_wsd_follows_one_path_until_each_t_s_own_cooldown():
    short, long = _spec(schedule="wsd", epochs=10), _spec(schedule="wsd", epochs=40)
    f, g = lr_factor(short, 100), lr_factor(long, 400)  # 10 steps an epoch
    assert [f(s) for s in range(80)] == [g(s) for s in range(80)]  # cooldown: the last 2 epochs
    assert f(79) == 1.0 and f(80) == 1.0 and 0 < f(99) < f(90) < 1
    assert [f(s) for s in range(5)] == [
        (s + 1) / 5 for s in range(5)
    ]  # warm-up in steps, not capped
    assert _spec(schedule="wsd", cooldown=3).cooldown_epochs() == 3
    assert _spec(schedule="wsd", epochs=1).cooldown_epochs() == 1


def test_branch_points_are_the_stable_epochs_where_each_t_cools_down():
    spec = _spec(schedule="wsd", epochs=80, branch_epochs=[10, 20, 40])
    assert spec.branch_points() == [8, 16, 32, 64]
    # one setting for a whole sweep: a shorter run leaves the starts it reaches
    assert _spec(schedule="wsd", epochs=20, branch_epochs=[10, 20, 40]).branch_points() == [8, 16]


@pytest.mark.parametrize(
    "train, key",
    [
        ({"branch_epochs": [10]}, "train.branch_epochs"),  # a cosine run has no stable phase
        ({"schedule": "wsd", "branch_epochs": [0]}, "train.branch_epochs"),
        ({"schedule": "step"}, "train.schedule"),
        ({"schedule": "wsd", "cooldown": 1.5}, "train.cooldown"),
        ({"freeze_logit_scale": 1}, "train.freeze_logit_scale"),
    ],
)
def test_bad_schedule_settings_are_refused_naming_the_key(train, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        _spec(**train)


def test_the_key_holds_schedule_and_frozen_temperature_only_when_not_the_default():
    default = _spec()
    assert "schedule" not in default.weights_key() and "freeze_logit_scale" not in str(
        default.weights_key()
    )
    wsd = _spec(schedule="wsd")
    assert wsd.weights_key()["train"]["schedule"] == "wsd"
    assert _spec(freeze_logit_scale=True).weights_key()["train"]["freeze_logit_scale"] is True
    assert _spec(schedule="wsd", branch_epochs=[5]).weights_key() == wsd.weights_key()
    args = ("corpus", compose_config().data.split, 300)
    assert target_key(wsd, *args) != target_key(_spec(schedule="wsd", epochs=20), *args)
    assert stable_key(wsd, *args) == stable_key(_spec(schedule="wsd", epochs=20, cooldown=3), *args)


def test_a_frozen_temperature_stays_out_of_the_optimiser():
    model = torch.nn.Module()
    model.w = torch.nn.Parameter(torch.ones(2, 2))
    model.logit_scale = torch.nn.Parameter(torch.tensor(2.0))
    opt, _ = optimizer(model, _spec(freeze_logit_scale=True), 10)
    held = [p for g in opt.param_groups for p in g["params"]]
    assert not any(p is model.logit_scale for p in held) and any(p is model.w for p in held)
    (model.w.sum() * model.logit_scale.exp()).backward()
    opt.step()
    assert model.logit_scale.item() == 2.0 and not torch.equal(model.w, torch.ones(2, 2))


WSD = ["train.schedule=wsd", "train.cooldown=1", "train.warmup_steps=4", "logger=none"]


def _state(root, cache, epochs, *overrides) -> SimpleNamespace:
    """The wsd target of `epochs` epochs (key and weights), obtained as a job does, in `cache`."""
    cfg = compose_config(
        *SMALL, f"paths.root_dir={root}", *WSD, f"train.epochs={epochs}", *overrides
    )
    members, _, splits, spec = prepare(cfg)
    target = TrainHere(init=None).obtain(
        spec,
        corpus=members,
        split=cfg.data.split,
        size=cfg.data.size,
        uids=splits.members,
        canaries=None,
        cache_dir=root / cache,
        logger=None,
        world=distributed.single(spec.trainer),
    )
    plan = json.loads((target.dir / "target.json").read_text())["plan"]
    return SimpleNamespace(
        key=target.key, state=target.model.state_dict(), taken=plan.get("stable_epochs_taken")
    )


def _assert_equal(a, b):
    assert a.key == b.key and a.state.keys() == b.state.keys()
    differ = [k for k in a.state if not torch.equal(a.state[k], b.state[k])]
    assert not differ, f"{len(differ)} of {len(a.state)} tensors differ, e.g. {differ[:3]}"


@pytest.mark.slow
def test_a_branched_target_equals_a_run_of_its_own_t(tmp_path, small_corpus, caplog):
    """T=3 (cooldown: epoch 3) branched off a T=5 run's stable phase at epoch 2 equals a fresh T=3
    run; and T=5 trained after T=3, from T=3's stable checkpoint, equals a fresh T=5 run."""
    root = tmp_path  # small_corpus: its cache, root/.cache, holds the corpus
    caplog.set_level(logging.INFO, logger="mia.training.stage")
    alone3, alone5 = _state(root, "alone3", 3), _state(root, "alone5", 5)
    assert "branching" not in caplog.text

    long = _state(root, "long_first", 5, "train.branch_epochs=[3]")
    stable = list((root / "long_first" / "stable").glob("*/epoch-*.ckpt"))
    assert sorted(p.name for p in stable) == ["epoch-2.ckpt", "epoch-4.ckpt"]
    caplog.clear()
    branched = _state(root, "long_first", 3)
    _assert_equal(branched, alone3)
    assert branched.taken == 2 and alone3.taken is None
    assert "branching from the stable phase" in caplog.text and "epoch-2.ckpt" in caplog.text
    _assert_equal(long, alone5)

    _state(root, "short_first", 3)
    caplog.clear()
    after = _state(root, "short_first", 5)
    _assert_equal(after, alone5)
    assert after.taken == 2 and "epoch-2.ckpt" in caplog.text
