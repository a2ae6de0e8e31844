"""mia.cache (docs/design.md §8.1): concurrent callers build a key once, a build that fails or is
killed leaves nothing half-written and no lock behind, and atomic writes leave no temporary
files."""

import json
import os
import time
from pathlib import Path

import filelock
import pytest

from mia.cache import atomic, atomic_write_text, busy, get_or_build, locked
from tests.helpers.processes import child, finish, kill, wait_for


def counted_build(path, counter, first=None):
    """A build that adds a line to `counter` each time it runs, calls `first()`, then writes
    `path`."""

    def build():
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        if first is not None:
            first()
        atomic_write_text(path, "artefact")

    return build


def folder_build(folder, counter):
    """A folder built as corpora are: written under a temporary name, DONE last, renamed into
    place."""

    def build():
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        with atomic(folder) as tmp:
            tmp.mkdir(exist_ok=True)  # as mia.data.synthetic.write_corpus does
            (tmp / "data").write_text("whole")
            (tmp / "DONE").touch()

    return build


def builds(counter) -> int:
    return len(Path(counter).read_text().splitlines()) if Path(counter).exists() else 0


def temporaries(folder) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if ".tmp" in p.name)


def assert_lock_free(path, timeout=10.0):
    """Take and drop `<path>.lock`; filelock.Timeout if some process still holds it."""
    lock = filelock.FileLock(f"{path}.lock")
    lock.acquire(timeout=timeout)
    lock.release()


# The children's code: module-level, so that a spawned process can import it.


def _race(me, path, counter, arrived, result):
    """One of two callers of one key. Whoever builds waits until the other has called too."""

    def until_both_called():
        wait_for(lambda: len(list(Path(arrived).iterdir())) == 2, "the other caller")
        time.sleep(0.2)  # the other caller is past its first check, waiting on the lock

    (Path(arrived) / me).touch()
    hit = get_or_build(path, counted_build(path, counter, until_both_called))
    Path(result).write_text(json.dumps({"hit": hit, "artefact": Path(path).read_text()}))


def _build_until_killed(folder, started):
    def build():
        with atomic(folder) as tmp:
            tmp.mkdir()
            (tmp / "data").write_text("half-written")
            Path(started).touch()
            time.sleep(60)  # killed long before
            (tmp / "DONE").touch()

    get_or_build(folder, build, done=Path(folder) / "DONE")


def _hold_lock(path, holding):
    with locked(path):
        Path(holding).touch()
        time.sleep(60)  # killed long before


def test_two_processes_racing_for_one_key_build_it_once(tmp_path):
    path, counter, arrived = (
        tmp_path / "artefact.txt",
        tmp_path / "builds.txt",
        tmp_path / "arrived",
    )
    arrived.mkdir()
    with (
        child(_race, "a", path, counter, arrived, tmp_path / "a.json") as a,
        child(_race, "b", path, counter, arrived, tmp_path / "b.json") as b,
    ):
        assert finish(a) == 0 and finish(b) == 0
    got = [json.loads((tmp_path / f"{me}.json").read_text()) for me in "ab"]
    assert builds(counter) == 1
    assert sorted(g["hit"] for g in got) == [
        False,
        True,
    ]  # one built it, the other waited and found it
    assert [g["artefact"] for g in got] == ["artefact", "artefact"]
    assert temporaries(tmp_path) == []


def test_a_build_that_raises_leaves_nothing_and_the_next_call_builds(tmp_path):
    folder, counter = tmp_path / "corpus", tmp_path / "builds.txt"

    def failing():
        with atomic(folder) as tmp:
            tmp.mkdir()
            (tmp / "data").write_text("half-written")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        get_or_build(folder, failing, done=folder / "DONE")
    assert not folder.exists() and temporaries(tmp_path) == []
    assert get_or_build(folder, folder_build(folder, counter), done=folder / "DONE") is False
    assert (folder / "data").read_text() == "whole" and (folder / "DONE").exists()
    assert (
        get_or_build(folder, failing, done=folder / "DONE") is True
    )  # complete: served, not built
    assert builds(counter) == 1


def test_a_killed_build_leaves_nothing_and_the_next_call_builds(tmp_path):
    folder, started, counter = tmp_path / "corpus", tmp_path / "started", tmp_path / "builds.txt"
    with child(_build_until_killed, folder, started) as proc:
        wait_for(started.exists, "the build to start")
        kill(proc)
    assert not folder.exists()  # neither the artefact nor its DONE
    assert temporaries(tmp_path) == [
        f"corpus.tmp{proc.pid}"
    ]  # the half-written build, under its temporary name
    assert_lock_free(folder)
    assert get_or_build(folder, folder_build(folder, counter), done=folder / "DONE") is False
    assert (
        sorted(os.listdir(folder)) == ["DONE", "data"] and (folder / "data").read_text() == "whole"
    )
    assert (
        temporaries(tmp_path) == []
    )  # the killed build's partial folder is discarded (design §8.1)


def test_atomic_starts_clean_where_a_killed_process_of_our_pid_left_its_temporary(tmp_path):
    # pids repeat (a container's job is often pid 1): a build killed under the pid this process has
    # now left its half-written folder under the very name atomic() hands this process.
    folder = tmp_path / "corpus"
    stale = tmp_path / f"corpus.tmp{os.getpid()}"
    stale.mkdir()
    (stale / "shard-0099.tar").write_text("from the killed build")
    with atomic(folder) as tmp:
        tmp.mkdir(exist_ok=True)  # as mia.data.synthetic.write_corpus does
        (tmp / "shard-0000.tar").write_text("whole")
    assert os.listdir(folder) == ["shard-0000.tar"] and temporaries(tmp_path) == []


def test_busy_says_whether_another_process_is_building_and_never_waits(tmp_path):
    path, holding = tmp_path / "targets" / "shadow", tmp_path / "holding"
    assert not busy(path)  # not even its folder yet
    path.parent.mkdir()
    with child(_hold_lock, path, holding) as proc:
        wait_for(holding.exists, "the child to take the lock")
        assert busy(path)
        kill(proc)
    assert not busy(path)
    assert_lock_free(path)  # the probe left no lock held


def test_a_lock_whose_holder_was_killed_does_not_block_the_next_builder(tmp_path):
    path, holding, counter = (
        tmp_path / "artefact.txt",
        tmp_path / "holding",
        tmp_path / "builds.txt",
    )
    # An OS lock (flock on Linux): the kernel drops it when its holder dies, however it dies.
    assert isinstance(filelock.FileLock(f"{path}.lock"), filelock.UnixFileLock)
    with child(_hold_lock, path, holding) as proc:
        wait_for(holding.exists, "the child to take the lock")
        with pytest.raises(filelock.Timeout):
            assert_lock_free(path, timeout=0.2)  # held while the child lives
        kill(proc)
    assert_lock_free(path)
    assert Path(f"{path}.lock").exists()  # the file stays behind, unlocked, and is reused
    assert get_or_build(path, counted_build(path, counter)) is False
    assert path.read_text() == "artefact" and builds(counter) == 1


def test_atomic_file_leaves_no_temporary_on_failure_and_keeps_the_old_version(tmp_path):
    path = tmp_path / "features.npz"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic(path) as tmp:
        assert (
            tmp.parent == path.parent and tmp.suffix == ".npz"
        )  # np.savez appends no second suffix
        tmp.write_text("new")
        raise RuntimeError("failed mid-write")
    assert path.read_text() == "old" and temporaries(tmp_path) == []


def test_atomic_folder_leaves_no_temporary_on_failure(tmp_path):
    path = tmp_path / "corpus"
    with pytest.raises(RuntimeError), atomic(path) as tmp:
        tmp.mkdir()
        (tmp / "shard-0000.tar").write_text("new")
        raise RuntimeError("failed mid-write")
    assert not path.exists() and temporaries(tmp_path) == []


def test_atomic_write_text_leaves_no_temporary_on_failure(tmp_path):
    path = tmp_path / "target.json"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):  # fails while writing, after the temporary file exists
        atomic_write_text(path, "\udc80")
    assert path.read_text() == "old" and temporaries(tmp_path) == []
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["target.json"]
