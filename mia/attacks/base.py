"""The interface every attack implements: score the evaluation pairs, higher = more likely
member."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from mia.data.pairs import load_raw, to_tensors
from mia.data.splits import MEMBER_EVAL, NONMEMBER_KNOWN, SCORED
from mia.validate import ConfigError


@dataclass
class AttackContext:
    """Everything an attacker may use, and nothing more. The evaluation sets' labels are not in
    here: `splits.aux_is_member` is ground truth for diagnostics only, never for scoring.

    features:  set name -> mia.features.SplitFeatures (mia.data.splits.EVAL_SETS), all from the
               target
    target:    mia.training.stage.Target; white-box attacks use target.model / tokenizer /
               preprocess
    shards:    where every set's pairs can be read (member corpus, plus the OOD corpus or
               data.shift's swapped pairs)
    references: the reference models the training stage trained for the job's attacks:
               {mia.training.shadows.reference_key: mia.training.shadows.ShadowSet}; empty where no
               attack needs them
    """

    features: dict
    splits: object
    target: object
    shards: list = field(default_factory=list)
    references: dict = field(default_factory=dict)
    seed: int = 0
    _raw: dict = field(
        default_factory=dict, repr=False
    )  # pairs read, by set; shared with with_members' contexts
    _members_as: str = field(
        default=MEMBER_EVAL, repr=False
    )  # the key member_eval's pairs are kept under

    def uids(self, name: str) -> np.ndarray:
        return self.features[name].uids

    def pairs(self, name: str):
        """(PIL images, captions) of a set, in the order of its features; read once, then kept."""
        key = self._members_as if name == MEMBER_EVAL else name
        if key not in self._raw:
            self._raw[key] = load_raw(self.shards, list(self.uids(name)), desc=f"load {name}")
        return self._raw[key]

    def with_members(self, features) -> AttackContext:
        """This context with another member set (mia.features.SplitFeatures) scored in member_eval's
        place, as the canaries are; the other sets' pairs are read once for both."""
        return replace(
            self,
            features={**self.features, MEMBER_EVAL: features},
            splits=replace(self.splits, member_eval=features.uids),
            _members_as=f"{MEMBER_EVAL}:{features.uids[0]}+{len(features.uids)}",
        )

    def scored_order(self, tag: int) -> np.ndarray:
        """Label-blind order of the scored pairs (docs/design.md §4, label-blind scoring): positions
        in the concatenation member_eval + nonmember_eval, as a shuffle seeded by (seed, tag) of the
        pairs sorted by uid. It depends on which pairs are scored, never on which of the two sets
        holds a pair: an attack whose score depends on batch-mates (or on a position in a random
        stream) cuts its batches from this order, so exchanging the two sets gives every pair the
        same batch."""
        uids = np.concatenate([self.uids(s) for s in SCORED])
        by_uid = np.argsort(uids, kind="stable")
        return by_uid[np.random.default_rng([self.seed, tag]).permutation(len(uids))]

    def split_scored(self, values) -> tuple:
        """(member_eval part, nonmember_eval part) of an array over the concatenation member_eval +
        nonmember_eval."""
        n = len(self.uids(MEMBER_EVAL))
        return values[:n], values[n:]

    def captions(self, name: str) -> list[str]:
        return self.pairs(name)[1]

    def tensors(self, name: str):
        """(images, tokens) of a set, preprocessed and tokenised for the target model."""
        return to_tensors(*self.pairs(name), self.target.preprocess, self.target.tokenizer)


class NotApplicable(Exception):
    """The data give an attack nothing to score with at its settings (no pseudo-members at this
    lambda, say): not a bad setting, an outcome. The job records the reason under results.json's
    `skipped` and goes on with the other attacks (mia/pipeline.py)."""


@dataclass
class AttackResult:
    member_scores: np.ndarray
    nonmember_scores: np.ndarray
    diagnostics: dict = field(default_factory=dict)


class Attack(ABC):
    """Settings are keyword arguments with no defaults in code: conf/attack/<name>.yaml holds
    them."""

    name: str = "attack"
    key: str = "attack"  # this instance's config key, attack.<name>; set by mia.job.build_attacks

    # Traits: what the job and the evaluation stage need to know about an attack, declared by the
    # attack itself (tests/evaluation/test_scoring.py runs each attack without D_no to hold them
    # true).
    #
    # needs_shadows: the attack scores with shadow CLIPs, which the training stage trains for it
    # (AttackContext.references, keyed by its num_shadows and shadows settings). Their reference
    # pool holds member_eval, so it gets no calibrated thresholds and no canaries (another member
    # set would need shadows of its own).
    needs_shadows: bool = False
    # reads_known_nonmembers: the attack reads D_no (ctx.features / ctx.pairs of nonmember_known, or
    # weak supervision's pseudo-labels built from it). Its scores of D_no then come from an attack
    # that saw those very pairs, so a threshold calibrated on them is flagged
    # threshold_from_training_pairs.
    reads_known_nonmembers: bool = False
    # uncalibrated: why the attack cannot score D_no for the calibrated thresholds without becoming
    # another attack (it trains on D_no and refuses to score a pair it trained on, say); None where
    # it can.
    uncalibrated: str | None = None
    # per_pair: a set's scores depend on that set alone (a pair's cosine, draws seeded by its uid,
    # batches cut from the set itself), never on the other pairs scored: such an attack defines
    # score(ctx, set_name), and another set (D_no, for the calibrated thresholds) is scored by
    # itself.
    per_pair: bool = False
    # baseline: the attack never queries the target (captions alone, say), so it measures what the
    # member / non-member distribution shift alone explains; the report subtracts its AUC from the
    # others'.
    baseline: bool = False
    # calibrated_per_pair: each pair's score is calibrated against reference models' scores of that
    # very pair, so pairs that are easy for any model lose their edge; the exposure analysis repeats
    # its across-seed overlap on such an attack's scores (mia/report/exposure.py).
    calibrated_per_pair: bool = False

    @contextmanager
    def _keyed(self):
        """A bad setting reported under this instance's own key (attack.wsa_gomez.lam): attacks
        raise mia.validate.ConfigError under their own keys (`lam`, `gomez.epochs`), so the message
        names the very key to fix, whichever config instance of the attack raised it."""
        try:
            yield
        except ConfigError as err:
            raise err.under(self.key) from None

    def __call__(self, ctx: AttackContext) -> AttackResult:
        """`run`, a bad setting named by its key (`_keyed`)."""
        with self._keyed():
            return self.run(ctx)

    def score_set(self, ctx: AttackContext, set_name: str) -> np.ndarray:
        """The scores of one set of ctx, scored alone (per_pair attacks only), a bad setting named
        by its key."""
        if not self.per_pair:
            raise TypeError(
                f"{self.name} scores its pairs together (per_pair is False): score it with run"
            )
        with self._keyed():
            return self.score(ctx, set_name)

    def score_known(self, ctx: AttackContext) -> np.ndarray:
        """Its scores of the known non-members D_no, each pair scored as an evaluation pair is, for
        the thresholds calibrated on them (mia.evaluation.scoring.calibrate). A per_pair attack
        scores D_no by itself; any other runs again with D_no in member_eval's place
        (AttackContext.with_members): its scores depend on the other pairs scored. An attack that
        scores a pair among batch-mates it cannot get that way overrides this (gradnorm)."""
        if self.per_pair:
            return np.asarray(self.score_set(ctx, NONMEMBER_KNOWN))
        return np.asarray(self(ctx.with_members(ctx.features[NONMEMBER_KNOWN])).member_scores)

    @abstractmethod
    def run(self, ctx: AttackContext) -> AttackResult:
        """Scores for ctx.features['member_eval'] and ctx.features['nonmember_eval'], in that
        order."""
