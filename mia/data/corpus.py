"""Where a job's pairs come from: the embedded synthetic corpus or the glyph corpus (generated
once, cached) or a folder of the user's own shards. Either way the job gets shards plus a cached index."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from mia.cache import config_hash, locked
from mia.data import glyphs, shards as sh
from mia.data.synthetic import write_corpus
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
    final = cache_dir / "corpus" / f"{name}-{key}"
    if (final / "sizes.json").exists():
        return final
    with locked(final):
        if not (final / "sizes.json").exists():  # another job may have written it while we waited
            tmp = final.with_name(final.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            write(tmp, size, shard_size=shard_size, **kw)
            tmp.rename(final)
    return final


def _indexed(name: str, shards: list[Path], cache_dir: Path) -> Corpus:
    fingerprint = config_hash(sh.shard_fingerprint(shards))
    path = cache_dir / "index" / f"{fingerprint}.npz"
    with locked(path):
        if path.exists():
            index = sh.Index.load(path)
        else:
            index = sh.build_index(shards, desc=f"index {name}")
            index.save(path)
    return Corpus(name, shards, index, fingerprint)


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
    raise ValueError(f"data.source={data_cfg.source!r}: choose 'synthetic', 'glyphs' or 'webdataset'")
