"""Fixtures every attack is tested on (two each, docs/design.md §9.1):

- planted: members differ measurably from non-members, a working attack must reach AUC > 0.9;
- null:    "members" and non-members come from one distribution, AUC must be within its
           bootstrap interval of 0.5.

Feature-only attacks use `planted_features` / `null_features` (synthetic embeddings, instant).
Attacks that need the model use `planted_model` / `null_model`: a tiny CLIP really trained on
200 pairs for 30 epochs, so its members are memorised; the null version scores held-out pairs
that the model never saw against other held-out pairs, split at random.

The bars (`assert_planted`, `assert_null`) and the code that builds these contexts are in
tests/helpers/attacks.py.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mia.pipeline import prepare
from mia.training.spec import target_key
from mia.training.stage import train_target
from tests.helpers.attacks import (
    feature_context,
    modality_context,
    model_context,
    pool_null_context,
)
from tests.helpers.caches import seed_cache
from tests.helpers.config import MODEL_OVERRIDES, compose_config
from tests.helpers.shared import built_once


@pytest.fixture
def planted_features():
    return feature_context(planted=True)


@pytest.fixture
def null_features():
    return feature_context(planted=False)


@pytest.fixture
def planted_modality():
    """Stand-in towers on which members' image views and caption perturbations agree (imgagree,
    txtagree)."""
    return modality_context(planted=True)


@pytest.fixture
def null_modality():
    return modality_context(planted=False)


@pytest.fixture(scope="session")
def _trained(tmp_path_factory, small_cache):
    # One worker trains it; under pytest-xdist the others load it from the shared cache (a hit).
    with built_once(tmp_path_factory, "attack_target") as (root, fresh):
        cfg = compose_config(*MODEL_OVERRIDES, f"paths.root_dir={root}")
        if fresh:  # the same corpus as debug=small's: generated once
            seed_cache(small_cache, cfg.paths.cache_dir)
        members, _, splits, spec = prepare(cfg)
        target = train_target(
            spec,
            members.shards,
            splits.members,
            Path(cfg.paths.cache_dir),
            target_key(spec, members.fingerprint, cfg.data.split, cfg.data.size),
        )
    return cfg, members, splits, target, spec


@pytest.fixture(scope="session")
def planted_model(_trained):
    """A trained tiny CLIP; member_eval are 100 of its 200 training pairs."""
    return model_context(*_trained)


@pytest.fixture(scope="session")
def null_model(_trained):
    """The same model, scoring two random halves of 300 pairs it never saw against each other."""
    cfg, members, splits, target, spec = _trained
    used = set(np.concatenate([splits.members, splits.nonmember_known, splits.aux_pool]))
    unseen = np.array([u for u in members.index.uids if u not in used])
    unseen = np.random.default_rng(0).permutation(unseen)[:300]
    null = replace(splits, member_eval=unseen[:150], nonmember_eval=unseen[150:])
    return model_context(cfg, members, null, target, spec)


@pytest.fixture(scope="module")
def pool_null(planted_model):
    """The null condition on planted_model's own reference pool, for the shadow attacks
    (test_lira.py)."""
    return pool_null_context(planted_model)


@pytest.fixture
def one_thread():
    """Tiny networks: several intra-op threads only spin against each other on a shared 2-core
    box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
