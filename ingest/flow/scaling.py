"""Scaling by depth: how many pollers a queue deserves, from its backlog and write latency.

More pollers only help while the writers keep up: when bulk writes are slow
(MongoDB is the narrow end) or the inbox is full, adding pollers would only
hold more messages in flight, so the pool does not grow then."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    low: int = 1
    high: int = 4
    backlog_per_poller: int = 100  # visible messages per poller before another one helps
    slow_write_seconds: float = 1.0  # bulk writes slower than this: don't add pollers

    def desired(self, visible: int, running: int, write_seconds: float, inbox_full: bool) -> int:
        if visible == 0:
            return max(self.low, running - 1)
        if inbox_full or write_seconds > self.slow_write_seconds:
            return max(self.low, min(running, self.high))
        if visible > self.backlog_per_poller * running:
            return min(self.high, running + 1)
        return max(self.low, min(running, self.high))
