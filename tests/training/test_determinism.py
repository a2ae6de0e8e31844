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

PATHS = {"in memory": ["data.in_memory=true"],
         "streamed, 2 workers": ["data.in_memory=false", "train.num_workers=2"]}
A = ["data.size=200", "seed=1"]  # another target: other members, another initialisation and order


def _train(root: Path, overrides: list) -> dict:
    """A target's weights, trained now (a fresh cache folder of its own: never a cache hit)."""
    cfg = compose_config(*SMALL, f"paths.root_dir={root}", "logger=none", *overrides)
    members, _, splits, spec = prepare(cfg)
    key = target_key(spec, members.fingerprint, cfg.data.split, cfg.data.size)
    cache = Path(tempfile.mkdtemp(dir=root, prefix="targets-"))
    return train_target(spec, members.shards, splits.members, cache, key, export=False).model.state_dict()


def _train_in_child(root: Path, before: list, overrides: list, out: Path):
    """In a fresh process: train `before` (a list of override lists) one after another, then the
    target of `overrides`, and save its weights to `out`."""
    for other in before:
        _train(root, other)
    torch.save(_train(root, overrides), out)


@pytest.mark.parametrize("path", PATHS)
def test_a_target_trained_after_another_equals_it_trained_alone(path, tmp_path):
    b = PATHS[path]
    weights = {}
    for name, before in (("alone", []), ("after A", [A + b])):
        weights[name] = tmp_path / f"{name}.pt"
        with child(_train_in_child, tmp_path, before, b, weights[name]) as proc:
            assert finish(proc, timeout=600) == 0
    alone, after = (torch.load(weights[n], weights_only=True) for n in ("alone", "after A"))
    assert alone.keys() == after.keys()
    differ = [k for k in alone if not torch.equal(alone[k], after[k])]
    assert not differ, f"{len(differ)} of {len(alone)} tensors differ, e.g. {differ[:3]}"
