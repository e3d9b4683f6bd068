"""A breaker on the document store: while open, pollers stop receiving.

Hand-written rather than pybreaker: the open state here must gate other threads (the
pollers) and close on a background probe, not on the next call. While open it is
probed (a real query: the sink's `ping`) with backoff (1 s doubling to 30 s) and says
so once, not at every probe. A store that answers the probe but fails again before a
single write succeeded (its reads work, its writes hang) keeps doubling the backoff,
so that a write path that stays broken is tried every 30 s, not every second."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

from ingest.errors import SinkUnavailable
from ingest.logs import Throttled

log = logging.getLogger(__name__)
_relapses = Throttled(log, interval=60.0)
_resumes = Throttled(log, interval=60.0)

FIRST_PROBE_SECONDS: Final = 1.0
MAX_PROBE_SECONDS: Final = 30.0


class Pingable(Protocol):
    def ping(self) -> None: ...


class SinkBreaker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._closed = threading.Event()
        self._closed.set()
        self._lock = threading.Lock()
        self._probe_every = FIRST_PROBE_SECONDS
        self._next_probe = 0.0
        self._proven = True  # a write succeeded since it last closed
        self.reason = ""  # why it opened, while open

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def wait_closed(self, timeout: float) -> bool:
        return self._closed.wait(timeout)

    def record_failure(self, reason: str) -> None:
        with self._lock:
            if not self._closed.is_set():
                return
            self._closed.clear()
            self.reason = reason
            now = self._clock()
            relapse = not self._proven
            self._probe_every = (
                min(MAX_PROBE_SECONDS, self._probe_every * 2) if relapse else FIRST_PROBE_SECONDS
            )
            self._next_probe = now + self._probe_every
        if relapse:  # said when it first opened; now once a minute at most
            _relapses.warning(f"{reason}; paused again, probing every {self._probe_every:.0f}s")
            return
        log.warning("%s; pausing the pollers, probing every %.0f-%.0fs until it answers",
                    reason, FIRST_PROBE_SECONDS, MAX_PROBE_SECONDS)  # fmt: skip

    def record_success(self) -> None:
        """A write succeeded."""
        with self._lock:
            self._proven = True
        self._close()

    def _close(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            self.reason = ""
        _resumes.warning("MongoDB answers again; resuming")

    def probe(self, sink: Pingable) -> None:
        """The periodic job: while open and a probe is due, ping; close on an answer."""
        with self._lock:
            if self._closed.is_set() or self._clock() < self._next_probe:
                return
        try:
            sink.ping()
        except SinkUnavailable as exc:
            with self._lock:
                self.reason = str(exc)
                self._probe_every = min(MAX_PROBE_SECONDS, self._probe_every * 2)
                self._next_probe = self._clock() + self._probe_every
            return
        with self._lock:
            self._proven = False  # a probe is a read: the next write says if writes work
        self._close()
