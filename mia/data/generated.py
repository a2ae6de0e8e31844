"""The embedded corpus past its shards: a member pool of any size (docs/design.md §2.7).

Pair i of the embedded corpus is a pure function of (corpus seed, i), so the corpus never has to be
written out in full. Only its first `data.corpus.size` pairs are shards: the held-out pairs and the
member pool's head are drawn from them. A target with data.size beyond that pool trains on the
head, then on pairs data.corpus.size, data.corpus.size + 1, ..., which the loader generates as it
needs them. Nothing of them is written; a larger N extends a smaller one's members; held-out pairs
stay where they are.

Each generated pair goes through the shards' own JPEG round trip, so a pair reads the same whether
it comes from a shard or from the generator (tests/data/test_generated.py holds the two equal).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from mia.data.dedup import dedup_key
from mia.data.shards import decode_image
from mia.data.synthetic import JPEG_QUALITY, make_sample, sample_index, sample_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Members:
    """The uids a target trains on, as arrays: `base` (read from the shards), then `extra` pairs the
    generator makes on demand, corpus indices `first`, `first` + 1, ... No per-pair Python object
    exists for the generated part, so 100M members cost what two int64 arrays cost.

    `forbidden` holds, per de-duplication rule, the keys of every held-out and non-member pair: a
    generated pair that shares one is redrawn (`GeneratedPairs`), so the member / non-member
    boundary stays de-duplicated past the shards too."""

    base: np.ndarray
    extra: int = 0
    first: int = 0
    seed: int = 0
    sample_kw: dict = field(
        default_factory=dict, repr=False, compare=False
    )  # make_sample's, but index and seed
    forbidden: dict = field(default_factory=dict, repr=False, compare=False)

    def extended(self, base, extra: int, forbidden: dict) -> Members:
        """These generator settings, with a member list."""
        return replace(self, base=base, extra=extra, forbidden=forbidden)

    def __len__(self) -> int:
        return len(self.base) + self.extra

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                raise IndexError("Members supports contiguous slices only")
            head = self.base[start:stop]
            lo, hi = max(start, len(self.base)), max(stop, len(self.base))
            return np.concatenate([head, self.uids(lo - len(self.base), hi - len(self.base))])
        i = range(len(self))[i]
        return (
            self.base[i]
            if i < len(self.base)
            else self.uids(i - len(self.base), i - len(self.base) + 1)[0]
        )

    def uids(self, start: int, stop: int) -> np.ndarray:
        """uids of generated members start..stop-1 (0 = the first past the shards)."""
        return np.array([sample_uid(self.seed, self.first + j) for j in range(start, stop)])

    def corpus_indices(self, positions) -> np.ndarray:
        """The corpus index of each member position (an array of positions)."""
        positions = np.asarray(positions, dtype=np.int64)
        nb = len(self.base)
        out = self.first + positions - nb
        head = positions < nb
        if head.any():
            out[head] = [sample_index(u) for u in self.base[positions[head]]]
        return out

    def describe(self) -> dict:
        """What target.json records of the generated part: enough to name every uid trained on."""
        return {
            "count": self.extra,
            "first_index": self.first,
            "uids": (
                f"{sample_uid(self.seed, self.first)}.."
                f"{sample_uid(self.seed, self.first + self.extra - 1)}"
                if self.extra
                else None
            ),
        }


def in_memory_bytes(n: int, image_size: int, context_length: int) -> int:
    """What n decoded, preprocessed pairs take in memory: fp32 images plus int64 tokens."""
    return n * (3 * image_size * image_size * 4 + context_length * 8)


class GeneratedPairs(Dataset):
    """(image, tokens, position) of member positions, generated from the corpus seed: the member
    loader of a target whose members run past the shards. Map-style, so DataLoader workers generate
    whole batches in parallel (`__getitems__`)."""

    MAX_REDRAWS = 8

    def __init__(self, members: Members, preprocess, tokenizer):
        self.members, self.sample_kw = members, {**members.sample_kw, "seed": members.seed}
        self.preprocess, self.tokenizer = preprocess, tokenizer

    def __len__(self):
        return len(self.members)

    def pair(self, index: int):
        """(PIL image, caption) of corpus pair `index` as the shards would hold it; a generated pair
        that shares a de-duplication key with a non-member is redrawn (it never is in the
        shards)."""
        for redraw in range(self.MAX_REDRAWS):
            image, caption, meta = make_sample(index, redraw=redraw, **self.sample_kw)
            data = jpeg(image)
            hit = (
                _collision(self.members.forbidden, caption, meta["url"], data)
                if index >= self.members.first
                else None
            )
            if hit is None:
                return decode_image(data), caption
            log.warning(
                "generated member %s shares its %s with a non-member: redrawn", meta["uid"], hit
            )
        raise RuntimeError(
            f"corpus pair {index} collided with a non-member {self.MAX_REDRAWS} times"
        )

    def __getitems__(self, positions):
        indices = self.members.corpus_indices(positions)
        pairs = [self.pair(int(i)) for i in indices]
        images = torch.stack([self.preprocess(im) for im, _ in pairs])
        return (
            images,
            self.tokenizer([c for _, c in pairs]),
            torch.as_tensor(np.asarray(positions, dtype=np.int64)),
        )

    def __getitem__(self, position):
        images, tokens, positions = self.__getitems__([position])
        return images[0], tokens[0], positions[0]


def jpeg(image) -> bytes:
    """The image as the corpus shards store it."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _collision(forbidden: dict, caption: str, url: str, data: bytes) -> str | None:
    """The first de-duplication rule under which this pair's key is a non-member's, or None."""
    for rule, keys in forbidden.items():
        if dedup_key(rule, caption, url, data) in keys:
            return rule
    return None
