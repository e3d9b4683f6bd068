"""A circuit breaker per queue, and round-robin choice among healthy queues.

Only the sender thread uses these, so they take no locks. A breaker opens
after `threshold` consecutive failed calls, stays open `reset_seconds`, then
lets one probe call through (half-open): success closes it, failure reopens it."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Collection, Sequence

log = logging.getLogger("producer.breaker")


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Breaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int = 3,
        reset_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        kind: str = "queue",
    ) -> None:
        self.name = name
        self.kind = kind  # for the log: "queue" or "bucket"
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self.state = State.CLOSED
        self.failures = 0
        self._opened_at = 0.0

    def allow(self) -> bool:
        """May a call go to this queue now? Moves open -> half-open when due."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN and self._clock() - self._opened_at >= self.reset_seconds:
            self._move(State.HALF_OPEN)
            return True
        return False  # open, or half-open with its one probe already out

    def success(self) -> None:
        self.failures = 0
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)

    def failure(self) -> None:
        self.failures += 1
        if self.state is State.HALF_OPEN or (
            self.state is State.CLOSED and self.failures >= self.threshold
        ):
            self._opened_at = self._clock()
            self._move(State.OPEN)

    def _move(self, state: State) -> None:
        log_at = logging.WARNING if state is State.OPEN else logging.INFO
        log.log(
            log_at, "%s %s: circuit %s -> %s", self.kind, self.name, self.state.value, state.value
        )
        self.state = state


class Router:
    """Round-robin over the queues whose breaker allows a call."""

    def __init__(self, urls: Sequence[str], make_breaker: Callable[[str], Breaker]) -> None:
        self.urls = list(urls)
        self.breakers = {url: make_breaker(url) for url in self.urls}
        self._next = 0

    def choose(self, exclude: Collection[str] = ()) -> str | None:
        count = len(self.urls)
        for step in range(count):
            index = (self._next + step) % count
            url = self.urls[index]
            if url not in exclude and self.breakers[url].allow():
                self._next = index + 1
                return url
        return None
