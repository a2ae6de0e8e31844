"""The interface every attack implements: score the evaluation pairs, higher = more likely member."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class AttackContext:
    """What an attacker may use. Labels of the evaluation sets are not in here on purpose:
    `splits.aux_is_member` is ground truth for diagnostics only."""
    features: dict          # set name -> mia.features.SplitFeatures
    splits: object          # mia.data.splits.Splits
    target: object          # mia.train.Target (white-box attacks use target.model)
    seed: int = 0


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
