"""mia/training/spec.py: precision in the target's key only where it is not fp32, and loader workers
sized to the cores (train.num_workers=auto), which no key holds."""

import pytest
import torch

from mia.training import spec as spec_module
from mia.training.spec import TrainSpec, target_key, workers_for
from tests.helpers.config import compose_config

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)
# target_key of the default config's spec on a CPU, as every fp32 target was keyed before precision
# could enter the key (computed with that code): fp32 targets already cached keep their entries.
FP32_KEY = "0ec2432a76796046"


def _spec(*overrides) -> tuple:
    cfg = compose_config(*overrides)
    return TrainSpec.from_cfg(cfg), cfg


def _key(spec, cfg, device=None):
    return target_key(spec, "corpus", cfg.data.split, cfg.data.size, device=device)


def test_an_fp32_target_keeps_the_key_it_had():
    spec, cfg = _spec()
    assert _key(spec, cfg, CPU) == FP32_KEY
    # fp32 named outright: the same target, wherever it trains
    for precision in ("32-true", "'32'"):
        named, _ = _spec(f"train.precision={precision}")
        assert _key(named, cfg, CPU) == _key(named, cfg, GPU) == FP32_KEY, precision
        assert "precision" not in named.weights_key(GPU)


def test_the_resolved_precision_keys_a_target_that_is_not_fp32():
    spec, cfg = _spec()  # precision=auto: bf16-mixed on a GPU
    assert spec.weights_key(GPU)[
        "precision"
    ] == "bf16-mixed" and "precision" not in spec.weights_key(CPU)
    assert _key(spec, cfg, GPU) != _key(spec, cfg, CPU)
    bf16, _ = _spec("train.precision=bf16-mixed")
    assert _key(bf16, cfg, CPU) == _key(bf16, cfg, GPU) == _key(spec, cfg, GPU)
    assert _key(_spec("train.precision=16-mixed")[0], cfg, GPU) not in (
        _key(spec, cfg, GPU),
        FP32_KEY,
    )


def test_without_a_device_the_key_resolves_precision_where_the_trainer_trains(monkeypatch):
    spec, cfg = _spec()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _key(spec, cfg) == _key(spec, cfg, GPU)
    assert _key(_spec("trainer=ddp_cpu")[0], cfg) == FP32_KEY  # accelerator=cpu: fp32, GPU or not
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _key(spec, cfg) == FP32_KEY


def test_num_workers_auto_takes_the_cores_less_one_per_rank_up_to_a_cap(monkeypatch):
    assert [workers_for(c) for c in (1, 2, 4, 16, 64)] == [0, 1, 3, 8, 8]
    assert workers_for(16, local_ranks=4) == 3 and workers_for(2, local_ranks=2) == 0
    spec, cfg = _spec("train.num_workers=auto")
    monkeypatch.setattr(spec_module, "available_cores", lambda: 16)
    assert spec.loader_workers() == 8
    assert _spec("train.num_workers=3")[0].loader_workers() == 3
    ddp, _ = _spec(
        "train.num_workers=auto", "trainer=ddp_cpu"
    )  # two local ranks share the 16 cores
    assert ddp.loader_workers() == 7
    # how many workers decode is no part of what the weights are
    assert _key(spec, cfg, CPU) == _key(_spec("train.num_workers=3")[0], cfg, CPU) == FP32_KEY


@pytest.mark.parametrize("value", ["many", "-1", "1.5"])
def test_a_bad_num_workers_is_refused_naming_the_key(value):
    with pytest.raises(ValueError, match=r"^train\.num_workers=.*an integer >= 0 or auto"):
        _spec(f"train.num_workers={value}")
