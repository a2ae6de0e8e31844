"""Duplicated canaries (docs/design.md §2.9): held-out pairs inserted into a target's training list
with given copy counts, and scored, group by group, as member sets of their own.

Web corpora hold many near-copies, and memorisation grows with the number of copies; the i.i.d.
member set says nothing about that tail. `data.canaries.copies: [1, 4, 16]` with `count: 100` takes
300 held-out pairs that no non-member set uses (Splits.spare), and trains on each uid of the c-copy
group c times per epoch (c x T in all). The member pool, the non-member sets and the evaluated
members are untouched; only the training list grows. Empty `copies` (the default) is no canary at
all: the same target key, target and results as before canaries existed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from mia.data.generated import Members
from mia.data.splits import MEMBER_EVAL, check_disjoint
from mia.validate import ConfigError, is_int, require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Canaries:
    count: int  # canaries per group
    groups: dict  # {copies: uids of that group}, in the order of data.canaries.copies

    @property
    def uids(self) -> np.ndarray:
        return np.concatenate(list(self.groups.values()))

    def key(self) -> dict:
        """What the canaries add to the target's cache key (mia.training.spec.target_key)."""
        return {"copies": list(self.groups), "count": self.count}


def settings(cfg, *, iid: bool, in_memory, audit: bool) -> tuple[list[int], int] | None:
    """(copies, count) of `data.canaries`, or None where it asks for none; bad values name their
    key."""
    if not cfg or not cfg.get("copies"):
        return None
    copies, count = list(cfg.get("copies")), cfg.get("count", 100)
    require(
        all(is_int(c) and c >= 1 for c in copies) and len(set(copies)) == len(copies),
        "data.canaries.copies",
        copies,
        "must be distinct integers >= 1, e.g. 'data.canaries.copies=[1,4,16]'",
    )
    require(is_int(count) and count >= 1, "data.canaries.count", count, "must be an integer >= 1")
    require(
        not audit,
        "data.canaries.copies",
        copies,
        "a target trained elsewhere (data=audit) has no canaries "
        "to insert; set data.canaries.copies=[]",
    )
    require(
        iid,
        "data.canaries.copies",
        copies,
        "canaries are held-out pairs of the member corpus, drawn for "
        "i.i.d. non-members only (data.nonmembers=iid, data.shift=0)",
    )
    require(
        in_memory is not False,
        "data.canaries.copies",
        copies,
        "repeated uids are trained from memory only; set data.in_memory=true",
    )
    return copies, int(count)


def draw(settings: tuple[list[int], int] | None, splits) -> Canaries | None:
    """The canary groups of `settings` (copies, count): consecutive runs of the held-out pairs no
    non-member set uses, in the order of `copies`. They do not depend on data.size, so every size of
    a sweep has the same canaries."""
    if settings is None:
        return None
    copies, count = settings
    need = count * len(copies)
    if len(splits.spare) < need:
        raise ConfigError(
            "data.canaries",
            need=f": {len(copies)} groups of {count} need {need} held-out pairs, "
            f"but only {len(splits.spare)} are left after the non-member sets; lower "
            "data.canaries.count or raise data.split.holdout",
        )
    groups = {c: splits.spare[i * count : (i + 1) * count] for i, c in enumerate(copies)}
    canaries = Canaries(count, groups)
    for name in ("members", "nonmember_eval", "nonmember_known", "aux_pool"):
        check_disjoint(canaries=canaries.uids, **{name: getattr(splits, name)})
    return canaries


def training_uids(members, canaries: Canaries | None) -> list:
    """The target's training list: the N members, then each canary uid once per copy."""
    if canaries is None:
        return members  # as it is: a Members list past the shards is never iterated here
    if isinstance(members, Members) and members.extra:
        raise ConfigError(
            "data.size",
            len(members),
            "runs past the embedded corpus's shards, and canaries train "
            "from the shards: keep data.size within the member pool or set data.canaries.copies=[]",
        )
    return list(members) + [
        u for c, group in canaries.groups.items() for u in group for _ in range(c)
    ]


def check_coverage(uids, seen, epochs: int):
    """Every uid trained on (number of times it is listed) x T times: members T, a c-copy canary c x
    T. `seen` counts per position of `uids` (mia.training.module.CLIPTarget.seen)."""
    seen = np.asarray(seen)
    got = Counter()
    for u, n in zip(uids, seen.tolist(), strict=True):
        got[u] += n
    want = Counter(uids)
    bad = [u for u in want if got[u] != want[u] * epochs]
    if bad:
        u = bad[0]
        raise RuntimeError(
            f"member coverage check failed: {len(bad)} uids not trained on copies x T times (e.g. "
            f"{u}: {got[u]} times, expected {want[u]} x {epochs})"
        )


def check_trained(trained_uids_file, canaries: Canaries):
    """Refuse a target whose training list does not hold every canary `copies` times. The canaries
    are the held-out pairs after the non-member sets, so the evaluation sizes decide which they are,
    and those sizes are not in the target key: a cached target trained beside other sets would
    otherwise be scored with wrong membership labels."""
    trained = Counter(open(trained_uids_file).read().split())
    wrong = [u for c, group in canaries.groups.items() for u in group if trained[u] != c]
    if wrong:
        raise ConfigError(
            "data.canaries",
            need=(
                f": the cached target {trained_uids_file} was trained on other canaries "
                f"({len(wrong)} of {len(canaries.uids)} differ, e.g. {wrong[0]}). Canaries are the "
                "held-out pairs after the non-member sets, so data.split.eval_size, known_size "
                "and aux_size must be those the target was trained beside"
            ),
        )


def features_of(extract, splits, canaries: Canaries):
    """The canaries' features, read through the job's own feature extraction with the canaries as
    the member set (its own cache entry beside the evaluation sets')."""
    features = extract(replace(splits, member_eval=canaries.uids))
    return None if features is None else features[MEMBER_EVAL]  # only rank 0 gets features back
