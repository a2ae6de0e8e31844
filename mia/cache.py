"""Content-addressed cache with file locks: concurrent sweep jobs never build the same thing twice
and never see a half-written artefact (everything is written to a temporary name, then renamed)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


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


def atomic_write_text(path: Path, text: str):
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
