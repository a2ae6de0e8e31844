"""Fixtures every attack is tested on (two each, docs/design.md §4 / issue "Every attack"):

- planted: members differ measurably from non-members, a working attack must reach AUC > 0.9;
- null:    "members" and non-members come from one distribution, AUC must be within its
           bootstrap interval of 0.5.

Feature-only attacks use `planted_features` / `null_features` (synthetic embeddings, instant).
Attacks that need the model use `planted_model` / `null_model`: a tiny CLIP really trained on
200 pairs for 30 epochs, so its members are memorised; the null version scores held-out pairs
that the model never saw against other held-out pairs, split at random.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from mia import distributed, metrics
from mia.attacks.base import AttackContext
from mia.features import EVAL_SETS, SplitFeatures, extract_features
from mia.pipeline import prepare
from mia.train import target_key, train_target

CONF = str(Path(__file__).resolve().parents[2] / "conf")
MODEL_OVERRIDES = ["data.size=200", "data.corpus.size=1200", "data.corpus.shard_size=400",
                   "data.split.holdout=600", "data.split.eval_size=100", "data.split.known_size=150",
                   "data.split.aux_size=200", "train.epochs=30", "train.progress_bar=false",
                   "n_bootstrap=100", "logger=none"]


def auc_of(result, n_bootstrap=200):
    scores = np.concatenate([result.member_scores, result.nonmember_scores])
    labels = np.r_[np.ones(len(result.member_scores)), np.zeros(len(result.nonmember_scores))]
    return metrics.roc_metrics(scores, labels, n_bootstrap=n_bootstrap, seed=0)


def assert_planted(result):
    m = auc_of(result)
    assert m["auc"] > 0.9, f"planted fixture: AUC {m['auc']:.3f} <= 0.9"


def assert_null(result):
    m = auc_of(result)
    lo, hi = m["auc_ci95"]
    assert lo <= 0.5 <= hi, f"null fixture: AUC {m['auc']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] excludes 0.5"


def _features(rng, n, d, align):
    """Unit image / text embeddings whose cosine grows with `align` (per row)."""
    img = rng.normal(size=(n, d))
    txt = align[:, None] * img + rng.normal(size=(n, d))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return img.astype(np.float32), txt.astype(np.float32)


class _Splits:
    def __init__(self, features, aux_is_member):
        for name in EVAL_SETS:
            setattr(self, name, features[name].uids)
        self.aux_is_member = aux_is_member


def feature_context(planted: bool, n=300, n_known=600, n_aux=600, d=32, seed=0):
    """Members' pairs are better aligned than non-members' when planted; identical otherwise."""
    rng = np.random.default_rng(seed)
    member_align = 1.2 if planted else 0.6
    sizes = {"member_eval": n, "nonmember_eval": n, "nonmember_known": n_known, "aux_pool": n_aux}
    aux_is_member = np.arange(n_aux) % 2 == 0
    feats = {}
    for name, size in sizes.items():
        if name == "member_eval":
            align = np.full(size, member_align)
        elif name == "aux_pool":
            align = np.where(aux_is_member, member_align, 0.6)
        else:
            align = np.full(size, 0.6)
        align = align + rng.normal(scale=0.1, size=size)
        img, txt = _features(rng, size, d, align)
        feats[name] = SplitFeatures(np.array([f"{name}{i}" for i in range(size)]), img, txt, (img * txt).sum(1))
    return AttackContext(features=feats, splits=_Splits(feats, aux_is_member), target=None, seed=seed)


@pytest.fixture
def planted_features():
    return feature_context(planted=True)


@pytest.fixture
def null_features():
    return feature_context(planted=False)


@pytest.fixture(scope="session")
def _trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack_target")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[*MODEL_OVERRIDES, f"paths.root_dir={root}"])
    members, _, splits = prepare(cfg)
    target = train_target(cfg, members.shards, splits.members, Path(cfg.paths.cache_dir),
                          target_key(cfg, members.fingerprint))
    return cfg, members, splits, target


def _context(cfg, members, splits, target):
    features, _ = extract_features(target, splits, members, members, distributed.single(cfg))
    return AttackContext(features=features, splits=splits, target=target, shards=members.shards, cfg=cfg,
                         seed=cfg.seed)


@pytest.fixture(scope="session")
def planted_model(_trained):
    """A trained tiny CLIP; member_eval are 100 of its 200 training pairs."""
    return _context(*_trained)


@pytest.fixture(scope="session")
def null_model(_trained):
    """The same model, scoring two random halves of 300 pairs it never saw against each other."""
    cfg, members, splits, target = _trained
    used = set(np.concatenate([splits.members, splits.nonmember_known, splits.aux_pool]))
    unseen = np.array([u for u in members.index.uids if u not in used])
    unseen = np.random.default_rng(0).permutation(unseen)[:300]
    null = replace(splits, member_eval=unseen[:150], nonmember_eval=unseen[150:])
    return _context(cfg, members, null, target)


@pytest.fixture
def one_thread():
    """Tiny networks: several intra-op threads only spin against each other on a shared 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
