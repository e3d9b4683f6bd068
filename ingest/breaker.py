"""A breaker on the document store: while open, pollers stop receiving.

Hand-written rather than pybreaker: the open state here must gate other
threads (the pollers) and close on a background ping, not on the next call."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class SinkBreaker:
    def __init__(self, failure_threshold: int = 1) -> None:
        self._threshold = failure_threshold
        self._failures = 0
        self._closed = threading.Event()
        self._closed.set()
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def wait_closed(self, timeout: float) -> bool:
        return self._closed.wait(timeout)

    def record_failure(self, reason: str) -> None:
        self._failures += 1
        if self._failures >= self._threshold and self._closed.is_set():
            self.opened_at = time.monotonic()
            self._closed.clear()
            log.warning("sink breaker opened: %s; pollers pause until it answers", reason)

    def record_success(self) -> None:
        self._failures = 0
        if not self._closed.is_set():
            log.warning("sink breaker closed: MongoDB answers again; resuming")
            self.opened_at = None
            self._closed.set()
