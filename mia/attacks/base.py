"""The interface every attack implements: score the evaluation pairs, higher = more likely member."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mia.cache import config_hash
from mia.data.pairs import load_raw, to_tensors


@dataclass
class AttackContext:
    """Everything an attacker may use, and nothing more. The evaluation sets' labels are not in
    here: `splits.aux_is_member` is ground truth for diagnostics only, never for scoring.

    features:  set name -> mia.features.SplitFeatures (member_eval, nonmember_eval,
               nonmember_known, aux_pool), all from the target model
    target:    mia.train.Target; white-box attacks use target.model / tokenizer / preprocess
    shards:    where every set's pairs can be read (member corpus, plus the OOD corpus if used)
    cfg:       the job's resolved config (shadow models reuse its model and train settings)
    """
    features: dict
    splits: object
    target: object
    shards: list = field(default_factory=list)
    cfg: object = None
    seed: int = 0
    _raw: dict = field(default_factory=dict, repr=False)

    def uids(self, name: str) -> np.ndarray:
        return self.features[name].uids

    def pairs(self, name: str):
        """(PIL images, captions) of a set, in the order of its features; read once, then kept."""
        if name not in self._raw:
            self._raw[name] = load_raw(self.shards, list(self.uids(name)), desc=f"load {name}")
        return self._raw[name]

    def captions(self, name: str) -> list[str]:
        return self.pairs(name)[1]

    def tensors(self, name: str):
        """(images, tokens) of a set, preprocessed and tokenised for the target model."""
        return to_tensors(*self.pairs(name), self.target.preprocess, self.target.tokenizer)

    def train_shadow(self, uids, tag: str):
        """A model with the target's architecture and training config, trained on `uids` through the
        same cached training stage (so a rerun trains nothing)."""
        from mia.train import train_target

        key = config_hash({"target": self.target.key, "shadow": tag, "uids": config_hash(sorted(uids))})
        return train_target(self.cfg, self.shards, list(uids), Path(self.cfg.paths.cache_dir), key)


@dataclass
class AttackResult:
    member_scores: np.ndarray
    nonmember_scores: np.ndarray
    diagnostics: dict = field(default_factory=dict)


class Attack(ABC):
    name: str = "attack"

    @abstractmethod
    def run(self, ctx: AttackContext) -> AttackResult:
        """Scores for ctx.features['member_eval'] and ctx.features['nonmember_eval'], in that order."""
