"""De-duplication across the member / non-member boundary (data.split.dedup, docs/design.md §2.4): a
pair's key under each rule, and the rules themselves. Below both the splits and the generated
members, which must not share a key with any non-member."""

from __future__ import annotations

import hashlib
import re

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from mia.validate import ConfigError

_NON_WORD = re.compile(r"[^a-z\s]+")


def normalise_caption(caption: str) -> str:
    """Ko et al. appendix E: strip, lower-case, drop digits, punctuation and English stop words."""
    words = _NON_WORD.sub(" ", caption.strip().lower()).split()
    return " ".join(w for w in words if w not in ENGLISH_STOP_WORDS)


# De-duplication rules (data.split.dedup): a pair is dropped from both sides of the member /
# non-member boundary when its key under a rule occurs on both sides (docs/design.md §2.4).
DEDUP_RULES = ("caption", "url", "image")  # normalised caption, non-empty URL, image sha256
DEFAULT_DEDUP = ("caption", "url")


def dedup_rules(split_cfg) -> tuple:
    """The rules of `data.split.dedup`, in order (default [caption, url]); refused unless a list of
    them."""
    rules = split_cfg.get("dedup", list(DEFAULT_DEDUP))
    rules = [] if rules is None else rules
    if (
        isinstance(rules, str)
        or not all(r in DEDUP_RULES for r in rules)
        or len(set(rules)) != len(rules)
    ):
        raise ConfigError(
            "data.split.dedup",
            need=f"={listed(rules) if not isinstance(rules, str) else repr(rules)}: "
            f"must be a list of distinct rules out of {listed(DEDUP_RULES)}, e.g. "
            "data.split.dedup=[caption,url] (the default) or data.split.dedup=[]",
        )
    return tuple(rules)


def listed(rules) -> str:
    return "[" + ",".join(str(r) for r in rules) + "]"


def index_keys(index, rule) -> np.ndarray:
    if rule == "caption":
        return np.array([normalise_caption(c) for c in index.captions])
    if rule == "url":
        return np.asarray(index.urls)
    if index.sha256 is None:
        raise ConfigError(
            "data.split.dedup", need="=[...,image] needs image hashes, and this index has none"
        )
    return np.asarray(index.sha256)


def dedup_key(rule: str, caption: str, url: str, image: bytes) -> str | None:
    """One pair's key under a rule, as `index_keys` computes it for a whole index; None = no key."""
    if rule == "caption":
        return normalise_caption(caption)
    if rule == "url":
        return url or None
    return hashlib.sha256(image).hexdigest()


def forbidden(member_index, pool, other, rules) -> dict:
    """Per rule, the keys a member generated past the shards must not share (docs/design.md §2.7):
    those of every member-corpus pair outside the pool (held out, or dropped by de-duplication) and
    of every pair of the non-members' own corpus, if they have one."""
    outside = ~np.isin(member_index.uids, pool)
    found = {}
    for rule in rules:
        keys = [index_keys(member_index, rule)[outside]] + (
            [] if other is None else [index_keys(other, rule)]
        )
        found[rule] = {str(k) for k in np.concatenate(keys) if rule == "caption" or k}
    return found


def codes(indexes, rules) -> list[dict]:
    """Per index, per rule: each pair's key as an integer shared across the indexes; -1 = no key. An
    empty URL or hash is no key. An empty normalised caption is one, as it always was."""
    codes = [{} for _ in indexes]
    for rule in rules:
        keys = [index_keys(index, rule) for index in indexes]
        values, inverse = np.unique(np.concatenate(keys), return_inverse=True)
        inverse = inverse.astype(np.int64)
        if rule != "caption":
            inverse[values[inverse] == ""] = -1
        for c, part in zip(
            codes, np.split(inverse, np.cumsum([len(k) for k in keys])[:-1]), strict=True
        ):
            c[rule] = part
    return codes
