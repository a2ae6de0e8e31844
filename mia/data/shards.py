"""Reading img2dataset / DataComp-style webdataset shards: listing, indexing, decoding.

The index (uid, caption, url of every readable sample) is built in one pass over the shards and
cached beside the other cached artefacts. A sample whose JPEG or JSON is unreadable is skipped
and counted there, so splits, training and feature extraction never see it.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mia.cache import atomic

log = logging.getLogger(__name__)


def list_shards(path, key: str = "data.path") -> list[Path]:
    """The .tar shards of a folder, sorted; a clear error names the config key if there are none."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}={str(path)!r}: no such shard folder")
    shards = sorted(folder.glob("*.tar"))
    if not shards:
        raise ValueError(f"{key}={str(path)!r} holds no .tar shards (expected img2dataset / DataComp layout: "
                         "NNNNN.tar with {key}.jpg, {key}.txt, {key}.json inside)")
    return shards


def raw_samples(shards):
    """Stream raw sample dicts (bytes per extension) of exactly `shards`, in order. The callers
    decide which rank and worker reads what (PairStream), so webdataset's own node and worker
    splitters are off: they would split an already split list again."""
    import webdataset as wds

    # Truncated or broken tar members are warned about and skipped, not fatal.
    return wds.WebDataset([str(s) for s in shards], shardshuffle=False, empty_check=False,
                          handler=wds.warn_and_continue, nodesplitter=None, workersplitter=None)


def decode_image(data: bytes, draft: bool = False) -> Image.Image:
    """Decode a JPEG/PNG to RGB; `draft` decodes at reduced scale, enough to prove it is readable."""
    image = Image.open(io.BytesIO(data))
    if draft and image.format == "JPEG":
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
    image.load()
    return image.convert("RGB")


def _meta(sample) -> dict:
    meta = json.loads(sample["json"]) if "json" in sample else {}
    caption = sample["txt"].decode("utf-8") if "txt" in sample else meta.get("caption")
    uid = meta.get("uid") or meta.get("key") or sample["__key__"]
    if caption is None:
        raise ValueError("no caption (.txt or json 'caption')")
    return {"uid": str(uid), "caption": caption.strip(), "url": str(meta.get("url", ""))}


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def image_bytes(sample) -> bytes:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    raise ValueError("no image (.jpg/.jpeg/.png/.webp)")


@dataclass
class Index:
    """Every readable sample of a shard folder, in shard order."""
    uids: np.ndarray
    captions: np.ndarray
    urls: np.ndarray
    corrupt: list = field(default_factory=list)  # [{"key", "shard", "reason"}] of skipped samples

    def __len__(self):
        return len(self.uids)

    def save(self, path: Path):
        with atomic(path) as tmp:
            np.savez(tmp, uids=self.uids, captions=self.captions, urls=self.urls,
                     corrupt=np.array(json.dumps(self.corrupt)))

    @classmethod
    def load(cls, path: Path) -> "Index":
        with np.load(path) as z:
            return cls(z["uids"], z["captions"], z["urls"], json.loads(str(z["corrupt"])))


def build_index(shards, desc: str = "index") -> Index:
    uids, captions, urls, corrupt = [], [], [], []
    for sample in tqdm(raw_samples(shards), desc=desc, unit="pair"):
        try:
            meta = _meta(sample)
            decode_image(image_bytes(sample), draft=True)
        except Exception as err:  # any unreadable part: skip the pair, keep the reason
            corrupt.append({"key": sample.get("__key__"), "shard": Path(sample.get("__url__", "?")).name,
                            "reason": f"{type(err).__name__}: {err}"[:200]})
            continue
        uids.append(meta["uid"])
        captions.append(meta["caption"])
        urls.append(meta["url"])
    if corrupt:
        log.warning("skipped %d corrupt samples (first: %s)", len(corrupt), corrupt[0])
    if not uids:
        raise ValueError(f"the shards {[str(s) for s in shards[:3]]}... hold no readable samples")
    return Index(np.array(uids), np.array(captions), np.array(urls), corrupt)


def shard_fingerprint(shards) -> list:
    """What identifies a shard folder's content cheaply: names, sizes and modification times."""
    return [[s.name, s.stat().st_size, int(s.stat().st_mtime)] for s in shards]
