"""Waiting on a condition, not on the clock: a test polls what it can observe (a count,
an event, a state) until it holds, and fails on a bound that only a hang reaches."""

from __future__ import annotations

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
