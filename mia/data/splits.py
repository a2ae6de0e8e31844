"""Member / non-member splits by uid (docs/design.md §2), de-duplicated across the boundary and checked
disjoint before anything is trained.

Member corpus, after a seeded permutation:  [ held out (H) | member pool ]
- member pool: a target with data.size=N trains on its first N uids (nested across a sweep);
- member_eval: the first K uids of the pool, so members of every target with N >= K;
- held out (or the shifted corpus, for nonmembers=ood): nonmember_eval (K), then
  nonmember_known (D_no), then the non-member half of aux_pool (D_all).
The member pool depends only on the member corpus, split.seed and split.holdout.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from mia.sizes import parse_size

_NON_WORD = re.compile(r"[^a-z\s]+")

# The sets an attacker holds features of, by the names every module uses for them.
MEMBER_EVAL = "member_eval"          # scored members: the first K uids of the member pool
NONMEMBER_EVAL = "nonmember_eval"    # scored non-members
NONMEMBER_KNOWN = "nonmember_known"  # D_no: non-members the attacker knows to be non-members
AUX_POOL = "aux_pool"                # D_all: unlabelled, half members and half non-members
EVAL_SETS = (MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN, AUX_POOL)
SCORED = (MEMBER_EVAL, NONMEMBER_EVAL)  # the two sets every attack scores, in this order


def normalise_caption(caption: str) -> str:
    """Ko et al. appendix E: strip, lower-case, drop digits, punctuation and English stop words."""
    words = _NON_WORD.sub(" ", caption.strip().lower()).split()
    return " ".join(w for w in words if w not in ENGLISH_STOP_WORDS)


def _dedup(mem_caps, mem_urls, other_captions, other_urls):
    """Keep-masks for both sides, dropping pairs whose normalised caption or URL is on both."""
    other_caps = np.array([normalise_caption(c) for c in other_captions])
    shared_caps = np.intersect1d(mem_caps, other_caps)
    shared_urls = np.intersect1d(mem_urls[mem_urls != ""], other_urls[other_urls != ""])
    return (~(np.isin(mem_caps, shared_caps) | np.isin(mem_urls, shared_urls)),
            ~(np.isin(other_caps, shared_caps) | np.isin(other_urls, shared_urls)))


@dataclass
class Splits:
    members: np.ndarray          # uids the target trains on: member_pool[:N]
    member_pool_size: int
    member_eval: np.ndarray
    nonmember_eval: np.ndarray
    nonmember_known: np.ndarray
    aux_pool: np.ndarray
    aux_is_member: np.ndarray    # ground truth of aux_pool, for diagnostics only, never for attacks
    dedup_dropped: int  # pairs dropped on either side of the boundary

    def summary(self) -> dict:
        return {"members": len(self.members), "member_pool": self.member_pool_size,
                **{name: len(getattr(self, name)) for name in EVAL_SETS},
                "aux_members": int(self.aux_is_member.sum()), "dedup_dropped": self.dedup_dropped}


def check_disjoint(**sets):
    """Refuse any uid that sits in two of the named sets; the error names both sets."""
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = np.intersect1d(sets[a], sets[b])
            if len(both):
                raise ValueError(f"{len(both)} uids are in both {a} and {b} (e.g. {list(both[:3])}): "
                                 "member and non-member splits must be disjoint")


def _refuse_duplicate_uids(uids, where):
    values, counts = np.unique(uids, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise ValueError(f"{where}: {len(dup)} uids occur more than once (e.g. {list(dup[:3])}); a uid could "
                         "land on both sides of the member / non-member boundary, so the split is refused")


def build_splits(member_index, split_cfg, size, nonmember_index=None) -> Splits:
    """`nonmember_index` is the shifted corpus for the OOD condition, or the audited non-member folder;
    None means i.i.d. `size` None (audits of a CLIP trained elsewhere) takes the whole member pool."""
    k = parse_size(split_cfg.eval_size, "data.split.eval_size")
    n_known = parse_size(split_cfg.known_size, "data.split.known_size")
    n_aux = parse_size(split_cfg.aux_size, "data.split.aux_size")
    holdout = parse_size(split_cfg.holdout, "data.split.holdout", minimum=0)
    _refuse_duplicate_uids(member_index.uids, "member corpus")
    if size is not None and k > parse_size(size, "data.size"):
        raise ValueError(f"data.split.eval_size={k} exceeds data.size={size}: member_eval must be "
                         "members of every target (K <= the smallest N of a sweep)")
    if holdout >= len(member_index):
        raise ValueError(f"data.split.holdout={holdout} leaves no member pool in a corpus of {len(member_index)}")

    order = np.random.default_rng(split_cfg.seed).permutation(len(member_index))
    held, pool = order[:holdout], order[holdout:]
    # De-duplicate across the boundary: drop pairs whose normalised caption or URL is on both sides.
    mem_caps = np.array([normalise_caption(c) for c in member_index.captions[pool]])
    mem_urls = member_index.urls[pool]
    keep_mem, keep_non = _dedup(mem_caps, mem_urls, member_index.captions[held], member_index.urls[held])
    pool_uids, non_uids = member_index.uids[pool][keep_mem], member_index.uids[held][keep_non]
    dropped = int((~keep_mem).sum() + (~keep_non).sum())
    if nonmember_index is not None:
        # OOD non-members are only filtered, so the member pool (and the cached targets) do not
        # depend on the non-member condition: iid and ood attack the very same targets.
        _refuse_duplicate_uids(nonmember_index.uids, "non-member (OOD) corpus")
        o = np.random.default_rng(split_cfg.seed).permutation(len(nonmember_index))
        _, keep_ood = _dedup(mem_caps, mem_urls, nonmember_index.captions[o], nonmember_index.urls[o])
        non_uids = nonmember_index.uids[o][keep_ood]
        dropped += int((~keep_ood).sum())

    n = len(pool_uids) if size is None else parse_size(size, "data.size")
    if k > n:
        raise ValueError(f"data.split.eval_size={k} exceeds the {n} member pairs")
    if n > len(pool_uids):
        raise ValueError(f"data.size={size!r} ({n}) exceeds the member pool of {len(pool_uids)} pairs "
                         f"(corpus {len(member_index)} - holdout {holdout} - {int((~keep_mem).sum())} "
                         "de-duplicated); lower data.size or use a larger corpus")
    need = k + n_known + n_aux // 2
    if need > len(non_uids):
        raise ValueError(f"non-member sets need {need} pairs (eval_size + known_size + aux_size/2) but only "
                         f"{len(non_uids)} are held out; raise data.split.holdout or lower those sizes")

    members = pool_uids[:n]
    aux_mem = pool_uids[k:min(n, k + n_aux - n_aux // 2)]  # trained on, but not in member_eval
    aux_non = non_uids[k + n_known:need]
    aux = np.concatenate([aux_mem, aux_non])
    truth = np.concatenate([np.ones(len(aux_mem), bool), np.zeros(len(aux_non), bool)])
    perm = np.random.default_rng(split_cfg.seed + 1).permutation(len(aux))  # attackers see no order
    splits = Splits(members=members, member_pool_size=len(pool_uids), member_eval=pool_uids[:k],
                    nonmember_eval=non_uids[:k], nonmember_known=non_uids[k:k + n_known],
                    aux_pool=aux[perm], aux_is_member=truth[perm], dedup_dropped=dropped)
    check_disjoint(members=splits.members, nonmember_eval=splits.nonmember_eval,
                   nonmember_known=splits.nonmember_known, aux_nonmembers=aux_non)
    check_disjoint(member_eval=splits.member_eval, nonmember_known=splits.nonmember_known,
                   aux_pool=splits.aux_pool)
    return splits
