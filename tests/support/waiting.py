"""Waiting on a condition, not on the clock: a test polls what it can observe (a count,
an event, a state) until it holds, and fails on a bound that only a hang reaches."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

#: Long enough that only a hang reaches it on a loaded two-core machine.
PATIENCE = 20.0


def wait_until(
    predicate: Callable[[], object], timeout: float = PATIENCE, interval: float = 0.01
) -> bool:
    """Polls `predicate` until it is true (True) or `timeout` passes (its last answer)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
    return True


def child_exit_code(pid: int, timeout: float = PATIENCE) -> int:
    """Reaps a forked child within `timeout`; a child still running then is killed and
    the test fails. `os.waitpid(pid, 0)` would hang a test whose child deadlocked, and
    the per-test timeout's alarm may land on another thread and never interrupt it."""
    exited: list[int] = []

    def reaped() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            exited.append(os.waitstatus_to_exitcode(status))
        return bool(exited)

    if not wait_until(reaped, timeout):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"forked child {pid} still running after {timeout} s: killed")
    return exited[0]
