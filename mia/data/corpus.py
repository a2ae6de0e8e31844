"""Where a job's pairs come from: the embedded synthetic corpus (generated once, cached) or a
folder of the user's own shards. Either way the job gets shards plus a cached index."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mia.cache import Layout, atomic, config_hash, get_or_build
from mia.data import shards as sh
from mia.data.synthetic import write_corpus
from mia.data.uids import read_uids
from mia.sizes import parse_size

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    name: str            # "synthetic-iid", "webdataset", ...
    shards: list[Path]
    index: sh.Index
    fingerprint: str     # identifies the content; part of every cache key downstream


def _synthetic_shards(gen_cfg: dict, style: str, cache_dir: Path) -> Path:
    kw = dict(gen_cfg)
    size = parse_size(kw.pop("size"), "data.corpus.size")
    shard_size = kw.pop("shard_size")
    key = config_hash({"size": size, "shard_size": shard_size, "style": style, **kw})
    final = Layout(cache_dir).corpus(f"synthetic-{style}", key)

    def build():
        with atomic(final) as tmp:
            write_corpus(tmp, size, shard_size=shard_size, style=style, **kw)

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
        folder = _synthetic_shards(dict(data_cfg.corpus), style, cache_dir)
        return _indexed(f"synthetic-{style}", sh.list_shards(folder, "data.corpus"), cache_dir)
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
    raise ValueError(f"data.source={data_cfg.source!r}: choose 'synthetic', 'webdataset' or 'audit'")


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
