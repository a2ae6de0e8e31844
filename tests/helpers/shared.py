"""Session fixtures built once for the whole test run, however many pytest-xdist workers run it.

Each worker has its own session, so a plain session fixture would generate the corpus and train its
targets once per worker. Instead the first worker to ask builds into a folder beside the workers'
own temporary folders, under a file lock; the others wait on the lock and then read what it left."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock


@contextmanager
def built_once(tmp_path_factory, name: str) -> Iterator[tuple[Path, bool]]:
    """(folder, fresh): `fresh` is True for the one caller that must fill the folder. The folder is
    marked complete only when that caller's block ends without an error, so a failed build is
    retried by the next worker rather than read half-done."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield tmp_path_factory.mktemp(name), True
        return
    root = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    with FileLock(f"{root}.lock"):
        done = root / ".complete"
        fresh = not done.exists()
        root.mkdir(exist_ok=True)
        yield root, fresh
        done.touch()
