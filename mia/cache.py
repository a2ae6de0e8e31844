"""The one owner of `.cache/`: its layout, the get-or-build primitive and atomic writes.

Every cached artefact (corpora, shard indexes, trained targets and shadows, feature stores, shadow
embeddings) goes through `get_or_build`: check, lock, re-check, build to a temporary name, rename,
and tell every DDP rank what rank 0 decided (docs/design.md §8). Concurrent sweep jobs therefore
never build the same thing twice and never see a half-written artefact.

Layout under `paths.cache_dir`:

    corpus/<name>-<key>/           generated corpora (webdataset shards; sizes.json written last)
    index/<fingerprint>.npz        the index of a shard folder (readable samples, corrupt ones
                                   listed)
    targets/<key>/                 one trained target or shadow model
        ckpt/last.ckpt             while training (resume point; removed once done)
        model.pt                   final weights (state_dict)
        trained_uids.txt           the uids trained on that the shards hold, one per line
                                   (generated ones: target.json)
        target.json                resolved config, seed, git revision, timings
        history.csv, loss.png      the training history (mia/training/history.py); shadows
                                   keep the CSV only
        DONE                       written last: without it the target is incomplete and never
                                   served
        features/<key>.npz         embeddings of evaluation / reference pairs under this model
        open_clip/                 the weights as an open_clip `local-dir:` folder
                                   (mia/checkpoint.py)
    checkpoints/<hash>/            a CLIP trained elsewhere (target=checkpoint): features/ only
    model_configs/<key>/<name>.json  custom architectures registered with open_clip to load a
                                   checkpoint
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


class Layout:
    """Where each kind of artefact lives under a cache root."""

    def __init__(self, root):
        self.root = Path(root)

    def corpus(self, name: str, key: str) -> Path:
        return self.root / "corpus" / f"{name}-{key}"

    def index(self, fingerprint: str) -> Path:
        return self.root / "index" / f"{fingerprint}.npz"

    def target(self, key: str) -> Path:
        return self.root / "targets" / key

    def stable(self, key: str) -> Path:
        """A wsd schedule's stable-phase checkpoints, shared by its targets of every T."""
        return self.root / "stable" / key

    def checkpoint(self, fingerprint: str) -> Path:
        return self.root / "checkpoints" / fingerprint

    def model_config(self, name: str, key: str) -> Path:
        return self.root / "model_configs" / key / f"{name}.json"

    @staticmethod
    def features(model_dir: Path, key: str) -> Path:
        return Path(model_dir) / "features" / f"{key}.npz"


def config_hash(obj, length: int = 16) -> str:
    """Stable hash of a JSON-able object (dict key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@contextmanager
def locked(path: Path):
    """Hold `<path>.lock`; say so when another job holds it, then wait for it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=1)
    except Timeout:
        log.info("waiting for another job building %s", path)
        t0 = time.time()
        lock.acquire()
        log.info("lock on %s acquired after %.0fs", path, time.time() - t0)
    try:
        yield
    finally:
        lock.release()


def busy(path: Path) -> bool:
    """Whether another process holds `<path>.lock` now, i.e. is building `path`. Never waits: a
    job with other artefacts to build can build those first (ShadowSet.fit)."""
    path = Path(path)
    if not path.parent.exists():
        return False
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def get_or_build(path: Path, build, world=None, done: Path | None = None) -> bool:
    """Make sure the artefact at `path` exists; returns True if it already did (a cache hit).

    `done` (default: `path` itself) is what proves the artefact complete; `build()` must create it
    last, atomically (`atomic` below). With a multi-rank `world` (mia.distributed.World) every rank
    calls this together: rank 0 holds the lock and decides, every rank runs `build()` (training and
    feature extraction are collective), and none returns before the artefact is complete."""
    done = Path(done or path)
    ranks = getattr(world, "size", 1)
    is_main = world is None or world.is_main
    hit = done.exists()
    if ranks > 1 or not hit:
        with locked(path) if is_main else nullcontext():
            hit = (
                world.broadcast(done.exists()) if ranks > 1 else done.exists()
            )  # built while we waited?
            if not hit:
                if is_main:
                    _discard_partials(path)
                build()
            if ranks > 1:
                world.barrier()  # the artefact is complete before any rank reads it
    return hit


@contextmanager
def atomic(path: Path):
    """Yield a temporary sibling of `path` (file or folder) to write; rename it to `path` on
    success, remove it on failure. The suffix is kept, so `np.savez` does not append another
    `.npz`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")
    _remove(tmp)  # left by a killed process that had this pid: its files must not join ours
    try:
        yield tmp
        tmp.replace(path)
    finally:
        _remove(tmp)


def _discard_partials(path: Path):
    """Remove what killed builds of `path` left under `atomic`'s temporary names. Only with the lock
    held: then no live build is writing one."""
    name = re.compile(rf"{re.escape(path.stem)}\.tmp\d+{re.escape(path.suffix)}")
    for tmp in path.parent.iterdir():
        if name.fullmatch(tmp.name):
            log.info("discarding %s, left by a killed build", tmp)
            _remove(tmp)


def _remove(path: Path):
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str):
    with atomic(path) as tmp:
        tmp.write_text(text)
