"""A target's weights are a function of its spec alone (its cache key, mia/training/spec.py): the
same target trained first in a fresh process, or after another target in the same process, is bit
for bit the same, in memory and streamed by loader workers."""

import tempfile
from pathlib import Path

import pytest
import torch

from mia.pipeline import prepare
from mia.training.spec import target_key
from mia.training.stage import train_target
from tests.helpers.config import SMALL, compose_config
from tests.helpers.processes import child, finish

pytestmark = pytest.mark.slow

PATHS = {
    "in memory": ["data.in_memory=true"],
    "streamed": ["data.in_memory=false", "train.num_workers=2"],
}


def _train(root: Path, overrides: list) -> dict:
    """A target's weights, trained now (a fresh cache folder of its own: never a cache hit)."""
    cfg = compose_config(*SMALL, f"paths.root_dir={root}", "logger=none", *overrides)
    members, _, splits, spec = prepare(cfg)
    key = target_key(spec, members.fingerprint, cfg.data.split, cfg.data.size)
    cache = Path(tempfile.mkdtemp(dir=root, prefix="targets-"))
    return train_target(
        spec, members.shards, splits.members, cache, key, export=False
    ).model.state_dict()


def _train_in_child(root: Path, names: list, out: Path):
    """In a fresh process: train the targets `names` (keys of PATHS) one after another, saving
    each."""
    for name in names:
        torch.save(_train(root, PATHS[name]), out / f"{name}, first {names[0]}.pt")


def test_a_target_trained_after_another_equals_it_trained_alone(tmp_path):
    """Two fresh processes train the two targets in opposite orders: each target is then trained
    once first and once after the other (whose members are read another way, and held or streamed by
    workers), and both times to the same bits."""
    first, second = PATHS
    for order in ((first, second), (second, first)):
        with child(_train_in_child, tmp_path, list(order), tmp_path) as proc:
            assert finish(proc, timeout=600) == 0
    for name, other in ((first, second), (second, first)):
        alone, after = (
            torch.load(tmp_path / f"{name}, first {n}.pt", weights_only=True) for n in (name, other)
        )
        assert alone.keys() == after.keys()
        differ = [k for k in alone if not torch.equal(alone[k], after[k])]
        assert not differ, (
            f"{name}: {len(differ)} of {len(alone)} tensors differ, e.g. {differ[:3]}"
        )
