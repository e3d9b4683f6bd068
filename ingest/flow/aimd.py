"""The adaptive ceiling's controller: additive increase, multiplicative decrease of the
write rate from the latency of our own bulk writes (see docs/peak-shaving.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class Aimd:
    """Additive increase, multiplicative decrease of a rate, one decision per window."""

    target_seconds: float
    window_seconds: float = 1.0
    increase_fraction: float = 0.1  # of the span max-min per window: floor to cap in ~10 s
    decrease_factor: float = 0.8  # latency above target
    overload_factor: float = 0.5  # an overload error: a strong signal
    quantile: float = 0.99  # the target is for the p99: operators' latency promise
    # Near the rate that was last too slow, climb at a tenth of the pace: plain AIMD
    # saws back into the wall every few seconds under a steady competing load (one full
    # step undoes a decrease whenever the rate is a few steps above the floor).
    caution_zone: float = 0.85  # of the last too-slow rate
    cautious_fraction: float = 0.01


class AimdController:
    """Finds the rate from the latency of our own bulk writes (see docs/peak-shaving.md).

    Bulks are capped at the burst size (the write stage splits larger ones), so
    their latencies are comparable; a window's p99 above target means slow down.
    It climbs only while the ceiling is what limits us (someone waited for
    tokens), so an idle consumer does not drift to the cap."""

    def __init__(self, policy: Aimd, low: float, high: float, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self._low, self._high = low, high
        self.rate = high
        self._latencies: list[float] = []
        self._overloaded = False
        self._limited = False
        self._too_slow_at: float | None = None  # the rate at the last slow window
        self._window_start = clock()

    def set_bounds(self, low: float, high: float) -> None:
        self._low, self._high = low, max(low, high)
        self.rate = min(max(self.rate, self._low), self._high)

    def waited(self) -> None:
        self._limited = True

    def observe(self, seconds: float, overloaded: bool) -> float | None:
        """Feeds one bulk's latency; returns the new rate when a window closes."""
        self._latencies.append(seconds)
        self._overloaded |= overloaded
        now = self._clock()
        if overloaded or now - self._window_start >= self.policy.window_seconds:
            return self._decide(now)
        return None

    def _decide(self, now: float) -> float:
        p = self.policy
        if self._overloaded:
            self._too_slow_at = self.rate
            self.rate *= p.overload_factor
        elif _quantile(self._latencies, p.quantile) > p.target_seconds:
            self._too_slow_at = self.rate
            self.rate *= p.decrease_factor
        elif self._limited:
            self.rate += self._step()
        self.rate = min(max(self.rate, self._low), self._high)
        self._latencies.clear()
        self._overloaded = self._limited = False
        self._window_start = now
        return self.rate

    def _step(self) -> float:
        p = self.policy
        span = self._high - self._low
        if self._too_slow_at is not None and self.rate >= self._too_slow_at:
            self._too_slow_at = None  # past it and fast enough: the load has gone
        step = p.increase_fraction * span
        if self._too_slow_at is not None and self.rate + step >= p.caution_zone * self._too_slow_at:
            return p.cautious_fraction * span  # a full step would land back at the wall
        return step


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
