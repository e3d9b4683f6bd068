"""Threads of the stages: joined together by one deadline, not one timeout each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


def join_by(threads: Iterable[threading.Thread], deadline: float) -> None:
    """Waits for each thread until `deadline` (time.monotonic()), all of them within it."""
    for thread in threads:
        if thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
