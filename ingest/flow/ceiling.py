"""The write ceiling: a token bucket shared by all writers, fixed or adaptive (AIMD).

A bulk write takes as many tokens as it has records, when it is let through.
A bulk larger than the burst goes on a full bucket into debt (no deadlock) and
later writers, queued in turn, pay it off. Hand-written because
the well-kept Python limiters (limits, pyrate-limiter) reject requests larger
than the bucket and cannot change rate on a live bucket, which the adaptive
mode and the replica share both need."""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ingest.errors import ConfigError
from ingest.flow.aimd import Aimd, AimdController

if TYPE_CHECKING:  # the settings import this module's RateMode: keep it light
    from ingest.metrics import Metrics

log = logging.getLogger(__name__)


class RateMode(enum.StrEnum):
    FIXED = "fixed"
    ADAPTIVE = "adaptive"


Clock = Callable[[], float]
Sleep = Callable[[float], None]

# The auto burst: 1/50 s of writing. Bulks are split to the burst, so a one-second window
# sees at most the ceiling plus one bulk (2%), leaving room for the writers' timing jitter
# (a writer woken late moves its bulk into the next window: measured up to 2-3 bulks).
AUTO_BURST_FRACTION = 0.02


CLOSED_RECHECK_SECONDS = 0.05


class WriteGate(Protocol):
    """Paces writes (the write ceiling). `acquire` blocks until `records` may be written."""

    def acquire(self, records: int) -> None: ...

    def observe(self, records: int, seconds: float, overloaded: bool) -> None: ...

    def max_bulk(self) -> int:
        """Largest bulk to write at once (0: no limit); larger batches are split."""
        ...


class OpenGate:
    """No ceiling."""

    def max_bulk(self) -> int:
        return 0

    def acquire(self, records: int) -> None:
        return None

    def observe(self, records: int, seconds: float, overloaded: bool) -> None:
        return None


class TokenBucket:
    """Thread-safe token bucket. `rate` 0 means closed: acquire waits for a rate.

    Writers take their turn one at a time and take tokens at the moment they are
    let through, so the bound (rate x seconds + burst) holds on the times the bulks
    really start, however late a writer's sleep ends. Reserving ahead and sleeping
    off the debt bounds only the *planned* times: writers woken late by a busy CPU
    bunch up (measured: 3 replicas in one process went 5% over)."""

    def __init__(
        self, rate: float, burst: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._turn = threading.Lock()  # one writer at a time waits for its tokens
        self._rate = rate
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._queued = 0.0  # tokens asked for by writers not yet let through
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        with self._lock:
            self._refill()
            self._rate = max(0.0, rate)
            if burst is not None:
                self._burst = max(1.0, burst)
                self._tokens = min(self._tokens, self._burst)

    def acquire(self, tokens: float) -> float:
        """Blocks until `tokens` may be spent, then spends them; returns the seconds waited.
        A bulk above the burst goes on a full bucket, and the writers behind it pay its
        debt: it waits no longer than a bulk of the burst's size would."""
        started = self._clock()
        with self._lock:
            self._queued += tokens
        try:
            with self._turn:
                while (wait := self._take(tokens)) > 0:
                    self._sleep(wait)
        finally:
            with self._lock:
                self._queued -= tokens
        return max(0.0, self._clock() - started)

    def _take(self, tokens: float) -> float:
        """Spends `tokens` if the bucket has them (0.0), else the seconds until it may."""
        with self._lock:
            if self._rate <= 0:
                return CLOSED_RECHECK_SECONDS  # a joining replica's warm-up
            self._refill()
            needed = min(tokens, self._burst)
            if self._tokens >= needed - 1e-9:
                self._tokens -= tokens
                return 0.0
            return (needed - self._tokens) / self._rate

    def debt_seconds(self) -> float:
        """How far behind the writers are: tokens asked for (and owed) beyond what the
        bucket holds, in seconds of the rate."""
        with self._lock:
            if self._rate <= 0:
                return math.inf
            self._refill()
            return max(0.0, self._queued - self._tokens) / self._rate

    def _refill(self) -> None:
        now = self._clock()
        if self._tokens < self._burst:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now


@dataclass(frozen=True)
class Ceiling:
    """The pool's ceiling as configured; each replica takes 1/live of it."""

    max_rate: float
    burst: float = 0.0  # 0: AUTO_BURST_FRACTION of a second's worth
    mode: RateMode = RateMode.FIXED
    target_seconds: float = 0.05
    min_rate: float = 0.0  # adaptive floor; 0: 1/50 of the maximum

    def __post_init__(self) -> None:
        if self.max_rate <= 0:
            raise ConfigError("the write ceiling (max_write_rate) must be above 0")
        if self.burst < 0 or self.min_rate < 0 or self.target_seconds <= 0:
            raise ConfigError("write burst and min write rate must be >= 0, target latency > 0")
        if self.min_rate > self.max_rate:
            raise ConfigError("min_write_rate must not exceed max_write_rate")

    @property
    def pool_burst(self) -> float:
        return self.burst or max(1.0, self.max_rate * AUTO_BURST_FRACTION)

    @property
    def floor(self) -> float:
        return self.min_rate or max(1.0, self.max_rate / 50)


class RateGate:
    """The WriteGate with a ceiling: fixed, or adaptive between a floor and the cap."""

    def __init__(
        self,
        ceiling: Ceiling,
        metrics: Metrics | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.ceiling = ceiling
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._live = 1
        self._warming = False
        self.granted = 0  # records let through, ever: what the replicas report as written
        self._bucket = TokenBucket(ceiling.max_rate, ceiling.pool_burst, clock=clock, sleep=sleep)
        self._aimd: AimdController | None = None
        if ceiling.mode is RateMode.ADAPTIVE:
            policy = Aimd(ceiling.target_seconds)
            self._aimd = AimdController(policy, ceiling.floor, ceiling.max_rate, clock)
        self._publish()

    @property
    def rate(self) -> float:
        """This replica's current ceiling, records per second."""
        return self._bucket.rate

    @property
    def live_replicas(self) -> int:
        return self._live

    def max_bulk(self) -> int:
        """Bulks no larger than this replica's burst keep every one-second window flat."""
        return max(1, int(self.ceiling.pool_burst / self._live))

    def acquire(self, records: int) -> None:
        waited = self._bucket.acquire(records)
        with self._lock:
            self.granted += records
            if waited > 0 and self._aimd is not None:
                self._aimd.waited()
        if self._metrics is not None:
            self._metrics.write_tokens_granted.inc(records)
            self._metrics.write_gate_wait_seconds.observe(waited)

    def observe(self, records: int, seconds: float, overloaded: bool) -> None:
        if self._aimd is None:
            return
        with self._lock:
            rate = self._aimd.observe(seconds, overloaded)
        if rate is not None and not self._warming:
            self._bucket.set_rate(rate)
            self._publish()

    def behind_seconds(self) -> float:
        """How long the writers already wait for tokens (inf while closed)."""
        return self._bucket.debt_seconds()

    def set_replicas(self, live: int, *, warming: bool = False) -> None:
        """Takes this replica's share: 1/live of the ceiling (nothing while warming up,
        until the others have seen us join and given up their part)."""
        live = max(1, live)
        with self._lock:
            self._live, self._warming = live, warming
            low, high = self.ceiling.floor / live, self.ceiling.max_rate / live
            if self._aimd is not None:
                self._aimd.set_bounds(low, high)
                high = self._aimd.rate
        self._bucket.set_rate(0.0 if warming else high, self.ceiling.pool_burst / live)
        self._publish()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.write_ceiling.set(self.rate)
            self._metrics.live_replicas.set(self._live)


def build_gate(ceiling: Ceiling | None, metrics: Metrics | None = None) -> RateGate | None:
    """The gate for this ceiling, or None when there is none."""
    return RateGate(ceiling, metrics) if ceiling is not None else None
