"""Caches built once per session and copied into a test's own `.cache` (fixtures in
tests/conftest.py).

A fresh `.cache` costs every job that uses it a corpus generation and an index, and a target trained
from scratch; many tests only need what an earlier job would have left there."""

import shutil
from pathlib import Path


def seed_cache(source, cache_dir) -> Path:
    """Copy the cache folder `source` into `cache_dir` (merged with what is there), as if an earlier
    job had filled it. A copy, not a link: a test may change or add files. copy2 keeps the shards'
    modification times, which their fingerprint holds, so every cache key, and every hit, carries
    over."""
    shutil.copytree(
        source,
        cache_dir,
        copy_function=shutil.copy2,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("*.lock"),
    )
    return Path(cache_dir)
