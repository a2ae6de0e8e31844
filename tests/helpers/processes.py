"""Child processes a test starts and stops itself: bounded waits, and SIGKILL by pid of its own
children only."""

import multiprocessing
import os
import signal
import time
from contextlib import contextmanager

# spawn, not fork: a child starts clean, whatever threads the test process (torch) has running
CONTEXT = multiprocessing.get_context("spawn")


def wait_for(predicate, what: str, timeout: float = 30.0):
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def kill(proc):
    """SIGKILL one child this test started, by its pid, and reap it."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)


@contextmanager
def child(target, *args):
    """Run `target(*args)` in a child process; a child still alive when the block ends is killed."""
    proc = CONTEXT.Process(target=target, args=args)
    proc.start()
    try:
        yield proc
    finally:
        if proc.is_alive():
            kill(proc)


def finish(proc, timeout: float = 30.0) -> int:
    """The child's exit code once it ends; fail (and kill it) if it runs past `timeout` seconds."""
    proc.join(timeout)
    if proc.is_alive():
        kill(proc)
        raise AssertionError(f"child {proc.pid} still running after {timeout:g}s")
    return proc.exitcode
