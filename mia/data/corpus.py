"""Where a job's pairs come from: the embedded synthetic corpus or the glyph corpus (generated
once, cached) or a folder of the user's own shards. Either way the job gets shards plus a cached index.
With data.shift the embedded corpus's non-members are mixed with its shifted sibling (`load_shifted`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from mia.cache import Layout, atomic, config_hash, get_or_build
from mia.data import glyphs, shards as sh
from mia.data.generated import Members
from mia.data.synthetic import SHIFT_PARTS, replaced_uid, write_corpus, write_swaps
from mia.data.uids import read_uids
from mia.sizes import parse_size

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    name: str            # "synthetic-iid", "webdataset", ...
    shards: list[Path]
    index: sh.Index
    fingerprint: str     # identifies the content; part of every cache key downstream


def _generated_shards(name: str, gen_cfg: dict, cache_dir: Path, write=write_corpus) -> Path:
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


def _indexed(name: str, shards: list[Path], cache_dir: Path) -> Corpus:
    fingerprint = config_hash(sh.shard_fingerprint(shards))
    # The index file is keyed by the format too, so an index built by older reading rules is rebuilt;
    # the corpus fingerprint (part of every target key) stays the folder's alone.
    path = Layout(cache_dir).index(config_hash({"shards": fingerprint, "format": sh.INDEX_FORMAT}))
    get_or_build(path, lambda: sh.build_index(shards, desc=f"index {name}").save(path))
    return Corpus(name, shards, sh.Index.load(path), fingerprint)


def load_corpus(data_cfg, cache_dir: Path, shifted: bool = False) -> Corpus:
    """The member corpus, or with `shifted=True` the corpus OOD non-members come from."""
    cache_dir = Path(cache_dir)
    if data_cfg.source == "synthetic":
        style = "shifted" if shifted else "iid"
        folder = _generated_shards(f"synthetic-{style}", {**data_cfg.corpus, "style": style}, cache_dir)
        return _indexed(f"synthetic-{style}", sh.list_shards(folder, "data.corpus"), cache_dir)
    if data_cfg.source == "glyphs":  # mia.data.glyphs; the resolved sources are part of the cache key
        if shifted:
            raise ValueError("data.nonmembers=ood: the glyph corpus has no shifted sibling; use nonmembers=iid")
        gen = {**data_cfg.corpus, "font": str(glyphs.find_font(data_cfg.corpus.font)),
               "unihan": str(glyphs.find_unihan(data_cfg.corpus.unihan))}
        folder = _generated_shards("glyphs", gen, cache_dir, glyphs.write_glyph_corpus)
        return _indexed("glyphs", sh.list_shards(folder, "data.corpus"), cache_dir)
    if data_cfg.source == "webdataset":
        key = "data.ood_path" if shifted else "data.path"
        path = data_cfg.ood_path if shifted else data_cfg.path
        if path is None:
            raise ValueError(f"{key} is not set: point it at a folder of img2dataset / DataComp shards")
        return _indexed(Path(path).name, sh.list_shards(path, key), cache_dir)
    if data_cfg.source == "audit":
        side = "nonmembers" if shifted else "members"
        if data_cfg.get(side) is None:
            raise ValueError(f"data.{side} is not set: point it at the shard folder of the audited CLIP's {side}")
        corpus = _indexed(f"{side}-{Path(data_cfg[side]).name}", sh.list_shards(data_cfg[side], f"data.{side}"),
                          cache_dir)
        uid_list = data_cfg.get(f"{side}_uids")
        return _narrowed(corpus, uid_list, f"data.{side}_uids") if uid_list else corpus
    raise ValueError(f"data.source={data_cfg.source!r}: choose 'synthetic', 'glyphs', 'webdataset' or 'audit'")


def extension(data_cfg) -> Members | None:
    """How the member pool runs on past the shards (mia/data/generated.py): the embedded corpus's
    generator settings and first index past its shards; None for corpora that end at their shards."""
    if data_cfg.source != "synthetic":
        return None
    kw = OmegaConf.to_container(data_cfg.corpus, resolve=True)
    first = parse_size(kw.pop("size"), "data.corpus.size")
    seed = kw.pop("seed")
    kw.pop("shard_size")
    return Members(np.array([], dtype=str), first=first, seed=seed, sample_kw={**kw, "style": "iid"})


def shift_settings(data_cfg) -> tuple[float, tuple]:
    """(data.shift, data.shift_parts in SHIFT_PARTS order), each refused naming its key unless it is a
    number in [0, 1] and a list of distinct parts; a shift above 0 only for the embedded corpus with
    i.i.d. non-members, the one setting with a sibling corpus to mix in (docs/design.md §2.6)."""
    shift, parts = data_cfg.shift, data_cfg.shift_parts
    parts = OmegaConf.to_container(parts) if OmegaConf.is_list(parts) else parts
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not 0 <= shift <= 1:
        raise ValueError(f"data.shift={shift!r}: must be a number in [0, 1], the probability that a non-member's "
                         "image or caption comes from the shifted sibling corpus (0: i.i.d. non-members)")
    if not isinstance(parts, list) or not parts or len(set(map(str, parts))) != len(parts) or \
            not all(p in SHIFT_PARTS for p in parts):
        raise ValueError(f"data.shift_parts={parts!r}: must be a non-empty list of distinct parts out of "
                         f"[{','.join(SHIFT_PARTS)}], e.g. data.shift_parts=[caption]")
    if shift > 0 and data_cfg.source != "synthetic":
        raise ValueError(f"data.shift={shift}: only the embedded corpus has a shifted sibling to mix into the "
                         f"non-members, and data.source={data_cfg.source!r}; set data.shift=0")
    if shift > 0 and data_cfg.nonmembers != "iid":
        raise ValueError(f"data.shift={shift} mixes the shifted corpus into i.i.d. non-members, and "
                         f"data.nonmembers={data_cfg.nonmembers!r} already takes every non-member from it; "
                         "set data.shift=0 or data.nonmembers=iid")
    return float(shift), tuple(p for p in SHIFT_PARTS if p in parts)


def load_shifted(data_cfg, members: Corpus, cache_dir: Path, shift: float, parts: tuple) -> Corpus:
    """The member corpus as the non-members see it under data.shift (docs/design.md §2.6): row for row
    `members`, but each pair whose image or caption the shift swaps is its swapped version. Only the
    swapped pairs are generated (cached by the corpus settings, shift and parts); the others are read
    from the member shards, so no uid lives in two shard folders."""
    gen = {**data_cfg.corpus, "shift": shift, "shift_parts": list(parts)}
    folder = _generated_shards("synthetic-swaps", gen, Path(cache_dir), write_swaps)
    if any(folder.glob("*.tar")):
        swapped = _indexed("synthetic-swaps", sh.list_shards(folder, "data.corpus"), Path(cache_dir))
        shards, new, fingerprint = swapped.shards, swapped.index, swapped.fingerprint
    else:  # a shift so small that it swapped nothing
        none = np.array([], dtype=str)
        shards, new, fingerprint = [], sh.Index(none, none, none, sha256=none), None
    ix = members.index
    row = {u: i for i, u in enumerate(ix.uids)}
    lost = [u for u in new.uids if replaced_uid(u) not in row]
    if lost:  # the corpora are generated together, so only a damaged member shard gets here
        raise ValueError(f"{len(lost)} swapped pairs stand in for pairs the member corpus does not hold "
                         f"(e.g. {lost[:3]}): regenerate the corpus (delete {members.shards[0].parent})")
    at = np.array([row[replaced_uid(u)] for u in new.uids], dtype=int)

    def put(column, values):  # object first: a swapped caption may be longer than the column's width
        out = column.astype(object)
        out[at] = values
        return out.astype(str)

    sha = None if ix.sha256 is None or new.sha256 is None else put(ix.sha256, new.sha256)
    index = sh.Index(put(ix.uids, new.uids), put(ix.captions, new.captions), put(ix.urls, new.urls),
                     new.corrupt, new.broken_shards, sha)
    return Corpus(f"synthetic-shift{shift:g}-{'+'.join(parts)}", members.shards + shards, index,
                  config_hash([members.fingerprint, fingerprint]))


def _narrowed(corpus: Corpus, path, key: str) -> Corpus:
    """The corpus restricted to the uids a list names (mia/data/uids.py reads .npy / .txt / .parquet)."""
    wanted = read_uids(path, key)
    keep = np.isin(corpus.index.uids, wanted)
    missing = len(np.setdiff1d(wanted, corpus.index.uids))
    if missing:
        log.warning("%s: %d of its %d uids are not in %s (absent or unreadable)", key, missing, len(wanted),
                    corpus.name)
    if not keep.any():
        raise ValueError(f"{key}={str(path)!r}: none of its {len(wanted)} uids is in the shards of {corpus.name}")
    ix = corpus.index
    index = sh.Index(ix.uids[keep], ix.captions[keep], ix.urls[keep], ix.corrupt, ix.broken_shards,
                     None if ix.sha256 is None else ix.sha256[keep])
    return Corpus(corpus.name, corpus.shards, index, config_hash([corpus.fingerprint, config_hash(sorted(wanted))]))
