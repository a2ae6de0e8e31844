"""Reading img2dataset / DataComp-style webdataset shards: listing, indexing, decoding.

The index (uid, caption, url of every readable sample) is built in one pass over the shards and
cached beside the other cached artefacts. It is the one place that decides what is readable: it
decodes every image exactly as training and feature extraction do (decode_image), and a sample
whose image, JSON or caption is unreadable, or that a truncated shard cut through, is skipped and
counted there. Splits, training and feature extraction only ever ask for indexed samples.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from mia.cache import atomic
from mia.validate import readable, require

log = logging.getLogger(__name__)


def list_shards(path, key: str = "data.path") -> list[Path]:
    """The .tar shards of a folder, sorted; a missing or unreadable folder, or one without shards,
    is refused naming the config key."""
    folder = readable(path, key, folder=True, fix="point it at a folder of img2dataset shards")
    shards = sorted(folder.glob("*.tar"))
    require(
        bool(shards),
        key,
        str(path),
        "holds no .tar shards (expected img2dataset / DataComp layout: NNNNN.tar with "
        "{key}.jpg, {key}.txt, {key}.json inside)",
    )
    return shards


def raw_samples(shards, errors: list | None = None):
    """Stream raw sample dicts (`__key__`, `__url__`, bytes per extension) of exactly `shards`, in
    order. The callers decide which rank and worker reads what (PairStream), so nothing here splits
    the list again.

    A shard that cannot be read to its end (an interrupted download, a bad header) costs only the
    samples from the failure on: the error goes into `errors` ({"shard", "error"}; logged when
    `errors` is None) and the samples before it are kept. The sample being read when the shard broke
    off is whole only if it has every kind of file the samples before it have; otherwise it is
    yielded with `__cut__` set, so that the index counts it and every reader drops it alike. Files
    are grouped into samples by key within a shard, never across two."""
    from webdataset.tariterators import base_plus_ext

    exts = None  # the kinds of file of the last complete sample (shards of a folder share a layout)
    for shard in shards:
        shard = Path(shard)
        failed, group = [], None  # group: the sample being assembled
        for fname, data in _tar_files(shard, failed):
            key, ext = base_plus_ext(fname)
            if key is None:
                continue
            ext = ext.lower()
            if group is not None and key != group["__key__"]:
                exts = _exts(group)
                yield group
                group = None
            if group is None:
                group = {"__key__": key, "__url__": str(shard)}
            group.setdefault(
                ext, data
            )  # a repeated file name keeps the first copy, as webdataset does
        if failed:
            if errors is None:
                log.warning(
                    "shard %s: %s; its samples from there on are lost", shard.name, failed[0]
                )
            else:
                errors.append({"shard": shard.name, "error": failed[0]})
            if group is not None and exts is not None and not exts <= _exts(group):
                group["__cut__"] = sorted(
                    exts - _exts(group)
                )  # the kinds of file the break cut off
        if group is not None:
            exts = exts if "__cut__" in group else _exts(group)
            yield group


def _exts(sample) -> set:
    """The kinds of file a sample has: its extensions, with every image format counted as one."""
    return {"image" if k in IMAGE_EXTS else k for k in sample if not k.startswith("__")}


_META_FILE = re.compile(r"__[^/]*__($|/)")  # webdataset's own metadata files, skipped as it does


def _tar_files(shard: Path, failed: list):
    """(file name, bytes) of the regular files of one tar, in order. Reading stops at the first
    error, recorded in `failed`. An uncompressed tar (every shard img2dataset or mia writes) is read
    by `_plain_tar_files`, which parses the 512-byte headers itself: tarfile's header parsing was
    most of the cost of a pass over 32 px shards. Anything else (compressed shards) goes to tarfile,
    which takes a header cut short for the end of the archive, so the end is checked too: a complete
    tar ends in a zero block, an interrupted download does not."""
    try:
        with open(shard, "rb", buffering=1 << 20) as raw:
            if _is_plain_tar(raw.read(tarfile.BLOCKSIZE)):
                raw.seek(0)
                yield from _plain_tar_files(raw)
                return
            raw.seek(0)
            tar = tarfile.open(fileobj=raw, mode="r|*")
            for info in tar:
                if info.isreg() and not _META_FILE.match(info.name):
                    yield info.name, tar.extractfile(info).read()
            if tar.fileobj.comptype == "tar":  # uncompressed: the zero block can be read back
                raw.seek(tar.offset)
                if raw.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
                    raise tarfile.ReadError(
                        f"no end-of-archive block after {tar.offset} bytes: truncated"
                    )
    except Exception as err:
        failed.append(f"{type(err).__name__}: {err}"[:200])


_REGULAR = (b"0", b"\0", b"7")  # tar type flags of regular files


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = int(header[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(header[:148]) + 8 * 32 + sum(header[156:])


def _is_plain_tar(header: bytes) -> bool:
    """An uncompressed tar starts with a header block whose checksum holds."""
    return (
        len(header) == tarfile.BLOCKSIZE
        and header != tarfile.NUL * tarfile.BLOCKSIZE
        and _checksum_ok(header)
    )


def _octal(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes past 8 GiB
        return int.from_bytes(field[1:], "big")
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _plain_tar_files(raw):
    """The regular files of an uncompressed tar, reading headers as POSIX (ustar, pax) and GNU write
    them: a pax `path` / `size` record or a GNU long name applies to the next file. Raises on a bad
    header checksum, a file cut short, or no end-of-archive block, after yielding what came
    before."""
    extended, offset = {}, 0
    while True:
        header = raw.read(tarfile.BLOCKSIZE)
        if header == tarfile.NUL * tarfile.BLOCKSIZE:
            return
        if len(header) < tarfile.BLOCKSIZE:
            raise tarfile.ReadError(f"no end-of-archive block after {offset} bytes: truncated")
        if not _checksum_ok(header):
            raise tarfile.ReadError(f"bad header checksum at byte {offset}")
        kind = header[156:157]
        size = int(extended.pop("size", _octal(header[124:136])))
        data = raw.read(size)
        if len(data) < size:
            raise tarfile.ReadError(f"unexpected end of data at byte {offset}: a file cut short")
        raw.read(-size % tarfile.BLOCKSIZE)  # padding; read, not seeked: that keeps the buffer
        offset += tarfile.BLOCKSIZE + size + (-size % tarfile.BLOCKSIZE)
        if kind in (b"x", b"L"):  # pax extended header / GNU long name: for the next file
            extended.update(
                _pax(data) if kind == b"x" else {"path": data.rstrip(b"\0").decode("utf-8")}
            )
            continue
        name = extended.pop("path", None)
        extended.clear()
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
            name = f"{prefix.decode('utf-8')}/{name}" if prefix else name
        if kind in _REGULAR and not _META_FILE.match(name):
            yield name, data


def _pax(data: bytes) -> dict:
    """The records of a pax extended header ("<length> <key>=<value>\\n" each) that name or size a
    file."""
    found, at = {}, 0
    while at < len(data) and data[at : at + 1] != b"\0":
        length = int(data[at : data.index(b" ", at)])
        key, _, value = data[data.index(b" ", at) + 1 : at + length - 1].partition(b"=")
        if key in (b"path", b"size"):
            found[key.decode()] = value.decode("utf-8")
        at += length
    return found


_WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit greyscale, as PIL opens such PNGs


def decode_image(data: bytes) -> Image.Image:
    """Decode an image file's bytes (JPEG, PNG, WebP, any size and mode) to 8-bit RGB. The index
    decodes every image with this very function, so what it found readable, training and features
    can read.

    Modes convert as open_clip's own preprocessing does (alpha dropped), except 16-bit greyscale,
    which PIL's convert would clip to white: it is scaled to 8 bits. Palette images go through RGBA,
    which keeps PIL quiet about palettes with per-entry transparency."""
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode in _WIDE_GREY:
        image = Image.fromarray(
            (np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8)
        )
    elif image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


_HEX64 = re.compile(r"[0-9a-f]{64}")


def read_meta(sample) -> dict:
    """uid, caption, url and the JSON's image sha256 (None if absent) of a raw sample; raises if its
    JSON or caption cannot be read. The uid is the JSON's `uid`, or its `key`, or the tar key
    (docs/design.md §2.1)."""
    meta = json.loads(sample["json"]) if "json" in sample else {}
    caption = sample["txt"].decode("utf-8") if "txt" in sample else meta.get("caption")
    if caption is None:
        raise ValueError("no caption (.txt or json 'caption')")
    return {
        "uid": _uid_of(meta, sample),
        "caption": caption.strip(),
        "url": str(meta.get("url", "")),
        "sha256": _sha256(meta.get("sha256")),
    }


def _sha256(value) -> str | None:
    """The JSON's sha256 of the image (img2dataset's compute_hash, DataComp's column), if it is
    one."""
    value = str(value or "").strip().lower()
    return value if _HEX64.fullmatch(value) else None


def sample_uid(sample) -> str | None:
    """The uid `read_meta` gives the sample, or None where its JSON is unreadable (such a sample is
    never indexed). The one rule the index, load_raw and PairStream all use to find a uid."""
    try:
        return _uid_of(json.loads(sample["json"]) if "json" in sample else {}, sample)
    except (ValueError, AttributeError):
        return None


def _uid_of(meta, sample) -> str:
    if not isinstance(meta, dict):
        raise ValueError("the .json is not an object")
    return str(meta.get("uid") or meta.get("key") or sample["__key__"])


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def image_bytes(sample) -> bytes:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    raise ValueError("no image (.jpg/.jpeg/.png/.webp)")


# Bumped whenever what an index holds changes, so that no cached index disagrees with the readers.
# 2: the sample a truncated shard was cut through is dropped; 3: images are decoded in full, as the
# readers decode them, and broken shards are kept; 4: each pair's image sha256.
INDEX_FORMAT = 4

# Why a sample was skipped (Index.corrupt[i]["kind"]).
CUT, IMAGE, METADATA = "truncated", "image", "metadata"


@dataclass
class Index:
    """Every readable sample of a shard folder, in shard order."""

    uids: np.ndarray
    captions: np.ndarray
    urls: np.ndarray
    corrupt: list = field(
        default_factory=list
    )  # [{"key", "shard", "kind", "reason"}] of skipped samples
    broken_shards: list = field(
        default_factory=list
    )  # [{"shard", "error"}] of shards read only in part
    sha256: np.ndarray | None = (
        None  # per pair: the image's hash (the JSON's "sha256", else of its bytes)
    )

    def __len__(self):
        return len(self.uids)

    def save(self, path: Path):
        with atomic(path) as tmp:
            hashes = {} if self.sha256 is None else {"sha256": self.sha256}
            np.savez(
                tmp,
                uids=self.uids,
                captions=self.captions,
                urls=self.urls,
                **hashes,
                corrupt=np.array(json.dumps(self.corrupt)),
                broken_shards=np.array(json.dumps(self.broken_shards)),
            )

    @classmethod
    def load(cls, path: Path) -> Index:
        with np.load(path) as z:
            return cls(
                z["uids"],
                z["captions"],
                z["urls"],
                json.loads(str(z["corrupt"])),
                json.loads(str(z["broken_shards"])),
                z["sha256"] if "sha256" in z.files else None,
            )


def build_index(shards, desc: str = "index") -> Index:
    uids, captions, urls, hashes, corrupt, broken = [], [], [], [], [], []
    for sample in tqdm(raw_samples(shards, errors=broken), desc=desc, unit="pair"):
        kind = CUT
        try:
            if "__cut__" in sample:
                raise ValueError(f"truncated shard: its {', '.join(sample['__cut__'])} was cut off")
            kind = METADATA
            meta = read_meta(sample)
            kind = IMAGE
            image = image_bytes(sample)
            decode_image(image)
        except Exception as err:  # any unreadable part: skip the pair, keep the reason
            corrupt.append(
                {
                    "key": sample.get("__key__"),
                    "shard": Path(sample.get("__url__", "?")).name,
                    "kind": kind,
                    "reason": f"{type(err).__name__}: {err}"[:200],
                }
            )
            continue
        uids.append(meta["uid"])
        captions.append(meta["caption"])
        urls.append(meta["url"])
        hashes.append(meta["sha256"] or hashlib.sha256(image).hexdigest())
    index = Index(
        np.array(uids), np.array(captions), np.array(urls), corrupt, broken, np.array(hashes)
    )
    if corrupt or broken:
        report = corrupt_report(index)
        log.warning(
            "skipped %d corrupt samples %s; %d shards read only in part (first: %s)",
            len(corrupt),
            report["corrupt_by_kind"],
            len(broken),
            (broken or corrupt)[0],
        )
    if not uids:
        raise ValueError(f"the shards {[str(s) for s in shards[:3]]}... hold no readable samples")
    return index


def corrupt_report(*indexes) -> dict:
    """What the indexes of a job skipped, for results.json's `data`: samples by kind, broken
    shards."""
    kinds = Counter(c.get("kind", "unknown") for index in indexes for c in index.corrupt)
    return {
        "corrupt_skipped": sum(kinds.values()),
        "corrupt_by_kind": dict(sorted(kinds.items())),
        "broken_shards": sum(len(index.broken_shards) for index in indexes),
    }


def shard_fingerprint(shards) -> list:
    """What identifies a shard folder's content cheaply: names, sizes and modification times."""
    return [[s.name, s.stat().st_size, int(s.stat().st_mtime)] for s in shards]
