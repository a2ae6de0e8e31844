"""The interface every defense implements. A defense acts at one or more of three points:

- `augment`: the training batch, inside the ordinary training step (augment_image, augment_text);
- `fit`: a training loop of its own instead of the ordinary one (dp_sgd);
- `release`: the embeddings the target answers queries with (embedding_noise).

Settings are keyword arguments with no defaults in code: conf/defense/<name>.yaml holds them and
names the class (`_target_`); the job builds it once (mia/training/spec.py).
"""

from __future__ import annotations

import hashlib

import numpy as np

from mia.validate import require


class Defense:
    name = "none"
    trains = False  # changes the trained weights: its settings enter the target's cache key
    augments = False  # `augment` is called on every training batch
    # a training loop of its own:
    # fit(spec, model, preprocess, tokenizer, shards, uids, world, tdir, optim)
    fit = None
    releases = False  # `release` perturbs the embeddings the target answers with
    strength = ()  # the settings a label shows: what a privacy-utility sweep varies

    def __init__(self, **settings):
        self.settings = dict(settings)

    def weights_key(self) -> dict | None:
        """What enters the target's cache key: nothing for a defense that leaves the weights alone,
        so defense=none (and output perturbation) keep the key every existing target has."""
        return {"name": self.name, **self.settings} if self.trains else None

    def augment(self, images, tokens, generator):
        return images, tokens

    def release(self, embeddings: np.ndarray, keys: list[str]) -> np.ndarray:
        return embeddings

    def record(self, target_dir=None) -> dict:
        """The defense as results.json records it; dp_sgd adds its privacy accounting."""
        return {"name": self.name, "label": self.label(), **self.settings}

    def label(self) -> str:
        """A short name of the defense and its strength, for tables and plots."""
        if not self.strength:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={self.settings[k]:g}" for k in self.strength) + ")"


class NoDefense(Defense):
    name = "none"

    def __init__(self):
        super().__init__()


def check(key: str, value, ok: bool, requirement: str):
    """Refuse a bad setting, naming its config key, defense.<key>."""
    require(ok, f"defense.{key}", value, f"must be {requirement}")


def keyed_normal(seed: int, key: str, shape) -> np.ndarray:
    """Standard normal noise that is a function of (seed, key) alone: the same query always gets the
    same answer, so an attacker cannot average the noise away by asking again."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little")]).standard_normal(shape)
