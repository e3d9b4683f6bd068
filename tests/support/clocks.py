"""A clock the test moves: what sleeps advances it, so time-based code runs at once
and exactly."""

from __future__ import annotations

import threading


class FakeClock:
    """`clock()` reads it; `clock.sleep(s)` moves it on by `s` (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
