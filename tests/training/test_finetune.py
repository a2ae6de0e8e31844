"""mia/training/finetune.py: target=finetune pretrains one base model on the shifted sibling corpus,
shared by the jobs that fine-tune it, and fine-tunes it on the members; what it cannot do is refused
before any work."""

import json

import pytest
import torch

from mia.job import JobSpec
from mia.pipeline import run
from mia.validate import ConfigError
from tests.helpers.config import compose_config

pytestmark = pytest.mark.slow

BASE = ["target=finetune", "target.pretrain_size=400", "target.pretrain_epochs=2"]


def test_fine_tuned_targets_share_one_cached_base_and_start_from_it(make_cfg, small_target):
    first = json.loads(run(make_cfg(*BASE)).read_text())
    second = json.loads(run(make_cfg(*BASE, "seed=1")).read_text())
    base = first["target"]["init"]
    assert base.endswith("open_clip") and "/base-" in base
    assert second["target"]["init"] == base  # one base model for every seed of a sweep
    assert first["target"]["cache_key"] != second["target"]["cache_key"]
    scratch = json.loads(run(make_cfg()).read_text())  # the default target, from small_target
    assert scratch["target"]["init"] is None and scratch["target"]["cache_hit"]
    tuned_w = torch.load(first["target"]["checkpoint"], weights_only=True)
    scratch_w = torch.load(scratch["target"]["checkpoint"], weights_only=True)
    assert any(not torch.equal(tuned_w[k], scratch_w[k]) for k in scratch_w)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["attack=lira"], r"^target='finetune': trains no shadow models"),
        (["data=glyphs"], r"^target='finetune': pretrains on the shifted sibling"),
        (["target.pretrain_epochs=0"], r"^target\.pretrain_epochs=0: an integer >= 1"),
    ],
)
def test_what_a_fine_tuned_target_cannot_do_is_refused_at_parse_time(overrides, match):
    with pytest.raises(ConfigError, match=match):
        JobSpec.parse(compose_config("debug=small", "logger=none", *BASE, *overrides))
