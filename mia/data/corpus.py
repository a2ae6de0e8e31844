"""Where a job's pairs come from: the `data` group's classes (each data option's `_target_`). The
embedded synthetic corpus or the glyph corpus (generated once, cached), a folder of the user's own
shards, or an audited CLIP's member and non-member folders. Either way the job gets shards plus a
cached index. With data.shift the embedded corpus's non-members are mixed with its shifted sibling
(`load_shifted`)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mia.cache import Layout, atomic, config_hash, get_or_build
from mia.data import glyphs
from mia.data import shards as sh
from mia.data.canaries import settings as canary_settings
from mia.data.generated import Members
from mia.data.splits import Splits, SplitSpec, build_splits
from mia.data.synthetic import SHIFT_PARTS, replaced_uid, write_corpus, write_swaps
from mia.data.uids import read_uids
from mia.sizes import parse_size
from mia.validate import ConfigError, is_number, readable, require

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    name: str  # "synthetic-iid", "webdataset", ...
    shards: list[Path]
    index: sh.Index
    fingerprint: str  # identifies the content; part of every cache key downstream


def generated_shards(name: str, gen_cfg: dict, cache_dir: Path, write=write_corpus) -> Path:
    """Run `write` once per distinct config into cache_dir/corpus, under a lock, atomically."""
    kw = dict(gen_cfg)
    size = parse_size(kw.pop("size"), "data.corpus.size")
    shard_size = kw.pop("shard_size")
    key = config_hash({"size": size, "shard_size": shard_size, **kw})
    final = Layout(cache_dir).corpus(name, key)

    def build():
        with atomic(final) as tmp:
            write(tmp, size, shard_size=shard_size, **kw)

    get_or_build(final, build, done=final / "sizes.json")
    return final


def indexed(name: str, shards: list[Path], cache_dir: Path) -> Corpus:
    fingerprint = config_hash(sh.shard_fingerprint(shards))
    # The index file is keyed by the format too, so an index built by older reading rules is
    # rebuilt; the corpus fingerprint (part of every target key) stays the folder's alone.
    path = Layout(cache_dir).index(config_hash({"shards": fingerprint, "format": sh.INDEX_FORMAT}))
    get_or_build(path, lambda: sh.build_index(shards, desc=f"index {name}").save(path))
    return Corpus(name, shards, sh.Index.load(path), fingerprint)


class Data(ABC):
    """The `data` group, parsed once (docs/design.md §2): N as an integer, the non-member condition,
    the shift, the split sizes and the canaries, each refused naming its key before any corpus is
    generated or read. A subclass per corpus (each data option's `_target_`) says where the pairs
    live."""

    name = "data"
    has_sibling = False  # a corpus of its own for the non-members exists (nonmembers=ood)
    # data.shift > 0 can swap the sibling's images and captions in, pair by pair
    mixes_shift = False
    sibling_fix = "use data.nonmembers=iid"  # how to get OOD non-members where there is no sibling
    # captions follow a grammar the utility's attribute probe reads (docs/design.md §11.1)
    attributes = False

    def __init__(
        self,
        *,
        size,
        nonmembers="iid",
        shift=0.0,
        shift_parts=("image", "caption"),
        in_memory="auto",
        split,
        canaries=None,
        corpus=None,
    ):
        self.size = self._size(size)
        self.nonmembers = self._nonmembers(nonmembers)
        self.shift, self.shift_parts = self._shift(shift, shift_parts)
        require(
            isinstance(in_memory, bool) or in_memory == "auto",
            "data.in_memory",
            in_memory,
            "must be true, false or auto",
        )
        self.in_memory = in_memory
        self.corpus = corpus
        self.split = SplitSpec.parse(split)
        self.canaries = canary_settings(
            canaries,
            iid=self.condition == "iid",
            in_memory=in_memory,
            audit=isinstance(self, Audit),
        )

    def _size(self, size) -> int | None:
        return parse_size(size, "data.size")

    def _nonmembers(self, nonmembers) -> str:
        require(nonmembers in ("iid", "ood"), "data.nonmembers", nonmembers, "choose iid or ood")
        require(
            nonmembers == "iid" or self.has_sibling,
            "data.nonmembers",
            nonmembers,
            f"{self.name} has no shifted sibling corpus; {self.sibling_fix}",
        )
        return nonmembers

    def _shift(self, shift, parts) -> tuple[float, tuple]:
        """(data.shift, data.shift_parts in SHIFT_PARTS order); a shift above 0 only for a corpus
        with a sibling to mix in, with i.i.d. non-members (docs/design.md §2.6)."""
        parts = list(parts) if isinstance(parts, (list, tuple)) else parts
        require(
            is_number(shift) and 0 <= shift <= 1,
            "data.shift",
            shift,
            "must be a number in [0, 1], the probability that a non-member's image or caption "
            "comes from the shifted sibling corpus (0: i.i.d. non-members)",
        )
        require(
            isinstance(parts, list)
            and parts
            and len(set(map(str, parts))) == len(parts)
            and all(p in SHIFT_PARTS for p in parts),
            "data.shift_parts",
            parts,
            f"must be a non-empty list of distinct parts out of [{','.join(SHIFT_PARTS)}], e.g. "
            "data.shift_parts=[caption]",
        )
        require(
            shift == 0 or self.mixes_shift,
            "data.shift",
            shift,
            "only the embedded corpus has a shifted sibling to mix into the non-members, and this "
            f"is data={self.name}; set data.shift=0",
        )
        require(
            shift == 0 or self.nonmembers == "iid",
            "data.shift",
            shift,
            "mixes the shifted corpus into i.i.d. non-members, and "
            f"data.nonmembers={self.nonmembers!r} already takes every non-member from it; set "
            "data.shift=0 or data.nonmembers=iid",
        )
        return float(shift), tuple(p for p in SHIFT_PARTS if p in parts)

    @property
    def condition(self) -> str:
        """iid, ood (a corpus of their own), audit, or under data.shift > 0: shift=<s> (images and
        captions), image-shift=<s> or caption-shift=<s>, so that a sweep report never pools two
        shifts."""
        if self.shift == 0:
            return self.nonmembers
        return (
            f"{'' if len(self.shift_parts) > 1 else self.shift_parts[0] + '-'}shift={self.shift:g}"
        )

    @property
    def corpus_size(self) -> int | None:
        """The pairs of a generated corpus (data.corpus.size); None for a folder of shards, whose
        size is known once it is indexed."""
        if not self.corpus or "size" not in self.corpus:
            return None
        return parse_size(self.corpus["size"], "data.corpus.size")

    def held_out_room(self) -> int | None:
        """The most non-member pairs a generated corpus can give beside the N members, before
        de-duplication: the held-out part grows from the far end of the member pool up to its first
        N (mia/data/splits.py), and OOD non-members are a sibling of the same size. None where that
        is known only once the corpus is indexed."""
        corpus = self.corpus_size
        if corpus is None or self.size is None or self.split.holdout >= corpus:
            return None  # unknown yet, or no member pool at all (refused with the splits)
        if self.nonmembers == "ood":
            return corpus
        return max(self.split.holdout, corpus - self.size)

    def shift_record(self) -> dict:
        """data.shift and its parts as applied: null where non-members have a corpus of their
        own."""
        if self.nonmembers != "iid":
            return {"shift": None, "shift_parts": None}
        return {
            "shift": self.shift,
            "shift_parts": list(self.shift_parts) if self.shift > 0 else None,
        }

    def swapped(self, uids, members: Corpus) -> np.ndarray | None:
        """Which of the non-member `uids` data.shift swapped (a part or both, docs/design.md §2.6):
        a swapped pair has a uid of its own, which the member corpus does not hold. None where
        nothing is shifted."""
        if self.nonmembers != "iid" or self.shift == 0:
            return None
        return ~np.isin(np.asarray(uids, dtype=str), members.index.uids)

    @abstractmethod
    def member_corpus(self, cache_dir: Path) -> Corpus:
        """The corpus the members come from (and the i.i.d. non-members)."""

    def sibling_corpus(self, cache_dir: Path) -> Corpus:
        """The corpus OOD non-members come from; only where `has_sibling` (data.nonmembers=ood is
        refused before any work otherwise)."""
        raise RuntimeError(f"data={self.name} has no sibling corpus")

    def extension(self) -> Members | None:
        """How the member pool runs on past the shards (mia/data/generated.py); None where it ends
        there."""
        return None

    def load(self, cache_dir: Path) -> tuple[Corpus, Corpus, Splits]:
        """(member corpus, non-member corpus, splits): the non-members are the member corpus's
        held-out pairs, those pairs partly swapped (data.shift), or a corpus of their own."""
        cache_dir = Path(cache_dir)
        members = self.member_corpus(cache_dir)
        if self.nonmembers == "ood":
            nonmembers = self.sibling_corpus(cache_dir)
            return (
                members,
                nonmembers,
                build_splits(
                    members.index,
                    self.split,
                    self.size,
                    nonmembers.index,
                    extension=self.extension(),
                ),
            )
        if (
            self.shift > 0
        ):  # held-out pairs with some images / captions swapped (docs/design.md §2.6)
            nonmembers = load_shifted(self.corpus, members, cache_dir, self.shift, self.shift_parts)
            return (
                members,
                nonmembers,
                build_splits(
                    members.index,
                    self.split,
                    self.size,
                    shifted_index=nonmembers.index,
                    extension=self.extension(),
                ),
            )
        # shift 0 is the i.i.d. job itself, not a mixture that happens to swap nothing
        return (
            members,
            members,
            build_splits(members.index, self.split, self.size, extension=self.extension()),
        )


class Synthetic(Data):
    """data=synthetic: the embedded corpus (mia/data/synthetic.py), generated once into the cache,
    with members past its shards generated in the loader and a shifted sibling for OOD
    non-members."""

    name, has_sibling, mixes_shift = "synthetic", True, True

    def _generated(self, style: str, cache_dir: Path) -> Corpus:
        folder = generated_shards(f"synthetic-{style}", {**self.corpus, "style": style}, cache_dir)
        return indexed(f"synthetic-{style}", sh.list_shards(folder, "data.corpus"), cache_dir)

    def member_corpus(self, cache_dir: Path) -> Corpus:
        return self._generated("iid", cache_dir)

    def sibling_corpus(self, cache_dir: Path) -> Corpus:
        return self._generated("shifted", cache_dir)

    def extension(self) -> Members:
        kw = dict(self.corpus)
        first = parse_size(kw.pop("size"), "data.corpus.size")
        seed = kw.pop("seed")
        kw.pop("shard_size")
        return Members(
            np.array([], dtype=str), first=first, seed=seed, sample_kw={**kw, "style": "iid"}
        )

    @property
    def attributes(self) -> bool:
        return self.condition == "iid"


class Glyphs(Data):
    """data=glyphs: CJK ideographs rendered and captioned (mia/data/glyphs.py); the resolved font
    and Unihan sources are part of the corpus's cache key."""

    name = "glyphs"

    def member_corpus(self, cache_dir: Path) -> Corpus:
        gen = {
            **self.corpus,
            "font": str(glyphs.find_font(self.corpus["font"])),
            "unihan": str(glyphs.find_unihan(self.corpus["unihan"])),
        }
        folder = generated_shards("glyphs", gen, cache_dir, glyphs.write_glyph_corpus)
        return indexed("glyphs", sh.list_shards(folder, "data.corpus"), cache_dir)


class WebDataset(Data):
    """data=webdataset: the user's own img2dataset / DataComp shard folder (data.path), and for OOD
    non-members another corpus's folder (data.ood_path)."""

    name, sibling_fix = "webdataset", "point data.ood_path at another corpus's shards"

    def __init__(self, *, path, ood_path=None, **common):
        if path is None:
            raise ConfigError(
                "data.path",
                need="is not set: point it at a folder of img2dataset / DataComp shards",
            )
        self.path, self.ood_path = path, ood_path
        self.has_sibling = ood_path is not None
        super().__init__(**common)
        # the folders are listed now, so that a typo is refused before anything is indexed
        sh.list_shards(path, "data.path")
        if ood_path is not None:
            sh.list_shards(ood_path, "data.ood_path")

    def member_corpus(self, cache_dir: Path) -> Corpus:
        return indexed(Path(self.path).name, sh.list_shards(self.path, "data.path"), cache_dir)

    def sibling_corpus(self, cache_dir: Path) -> Corpus:
        return indexed(
            Path(self.ood_path).name, sh.list_shards(self.ood_path, "data.ood_path"), cache_dir
        )


class Audit(Data):
    """data=audit (and ko, gomez): the audited CLIP's owner's member and non-member shard folders,
    optionally narrowed by uid lists. Nothing is held out of the members; size None = every
    member."""

    name, has_sibling = "audit", True

    def __init__(
        self,
        *,
        members,
        nonmembers_path,
        members_uids=None,
        nonmembers_uids=None,
        nonmembers="ood",
        **common,
    ):
        require(
            nonmembers in ("iid", "ood"),
            "data.nonmembers",
            nonmembers,
            "is iid or ood; the audited CLIP's non-member shard folder is data.nonmembers_path",
        )
        require(
            nonmembers == "ood",
            "data.nonmembers",
            nonmembers,
            "an audit's non-members come from data.nonmembers_path, a corpus of their own: "
            "leave data.nonmembers=ood",
        )
        for key, folder in (("data.members", members), ("data.nonmembers_path", nonmembers_path)):
            if folder is None:
                raise ConfigError(
                    key,
                    need="is not set: point it at the shard folder of the audited CLIP's "
                    f"{'members' if key == 'data.members' else 'non-members'}",
                )
        self.folders = {"members": members, "nonmembers": nonmembers_path}
        self.uid_lists = {"members": members_uids, "nonmembers": nonmembers_uids}
        super().__init__(nonmembers="ood", **common)
        # every folder and uid list is checked now, before anything is indexed
        for key, folder in (("data.members", members), ("data.nonmembers_path", nonmembers_path)):
            sh.list_shards(folder, key)
        for side, uid_list in self.uid_lists.items():
            if uid_list:
                readable(
                    uid_list,
                    f"data.{side}_uids",
                    folder=False,
                    fix="point it at a .npy, .txt or .parquet list of uids, or set it to null",
                )

    def _size(self, size) -> int | None:
        return None if size is None else parse_size(size, "data.size")

    @property
    def condition(self) -> str:
        return "audit"

    def _side(self, side: str, cache_dir: Path) -> Corpus:
        folder = self.folders[side]
        key = "data.members" if side == "members" else "data.nonmembers_path"
        corpus = indexed(f"{side}-{Path(folder).name}", sh.list_shards(folder, key), cache_dir)
        uid_list = self.uid_lists[side]
        return _narrowed(corpus, uid_list, f"data.{side}_uids") if uid_list else corpus

    def member_corpus(self, cache_dir: Path) -> Corpus:
        return self._side("members", cache_dir)

    def sibling_corpus(self, cache_dir: Path) -> Corpus:
        return self._side("nonmembers", cache_dir)


def load_shifted(
    corpus: dict, members: Corpus, cache_dir: Path, shift: float, parts: tuple
) -> Corpus:
    """The member corpus as the non-members see it under data.shift (docs/design.md §2.6): row for
    row `members`, but each pair whose image or caption the shift swaps is its swapped version. Only
    the swapped pairs are generated (cached by the corpus settings, shift and parts); the others are
    read from the member shards, so no uid lives in two shard folders."""
    gen = {**corpus, "shift": shift, "shift_parts": list(parts)}
    folder = generated_shards("synthetic-swaps", gen, Path(cache_dir), write_swaps)
    if any(folder.glob("*.tar")):
        swapped = indexed("synthetic-swaps", sh.list_shards(folder, "data.corpus"), Path(cache_dir))
        shards, new, fingerprint = swapped.shards, swapped.index, swapped.fingerprint
    else:  # a shift so small that it swapped nothing
        none = np.array([], dtype=str)
        shards, new, fingerprint = [], sh.Index(none, none, none, sha256=none), None
    ix = members.index
    row = {u: i for i, u in enumerate(ix.uids)}
    lost = [u for u in new.uids if replaced_uid(u) not in row]
    if lost:  # the corpora are generated together, so only a damaged member shard gets here
        raise ValueError(
            f"{len(lost)} swapped pairs stand in for pairs the member corpus does not hold "
            f"(e.g. {lost[:3]}): regenerate the corpus (delete {members.shards[0].parent})"
        )
    at = np.array([row[replaced_uid(u)] for u in new.uids], dtype=int)

    def put(
        column, values
    ):  # object first: a swapped caption may be longer than the column's width
        out = column.astype(object)
        out[at] = values
        return out.astype(str)

    sha = None if ix.sha256 is None or new.sha256 is None else put(ix.sha256, new.sha256)
    index = sh.Index(
        put(ix.uids, new.uids),
        put(ix.captions, new.captions),
        put(ix.urls, new.urls),
        new.corrupt,
        new.broken_shards,
        sha,
    )
    return Corpus(
        f"synthetic-shift{shift:g}-{'+'.join(parts)}",
        members.shards + shards,
        index,
        config_hash([members.fingerprint, fingerprint]),
    )


def _narrowed(corpus: Corpus, path, key: str) -> Corpus:
    """The corpus restricted to the uids a list names (mia/data/uids.py reads .npy / .txt /
    .parquet)."""
    wanted = read_uids(path, key)
    keep = np.isin(corpus.index.uids, wanted)
    missing = len(np.setdiff1d(wanted, corpus.index.uids))
    if missing:
        log.warning(
            "%s: %d of its %d uids are not in %s (absent or unreadable)",
            key,
            missing,
            len(wanted),
            corpus.name,
        )
    if not keep.any():
        raise ValueError(
            f"{key}={str(path)!r}: none of its {len(wanted)} uids is in the shards of {corpus.name}"
        )
    ix = corpus.index
    index = sh.Index(
        ix.uids[keep],
        ix.captions[keep],
        ix.urls[keep],
        ix.corrupt,
        ix.broken_shards,
        None if ix.sha256 is None else ix.sha256[keep],
    )
    return Corpus(
        corpus.name,
        corpus.shards,
        index,
        config_hash([corpus.fingerprint, config_hash(sorted(wanted))]),
    )
