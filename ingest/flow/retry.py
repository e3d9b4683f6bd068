"""Retry by visibility: a failed message comes back later, later each time it fails."""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_VISIBILITY_SECONDS = 43200  # SQS's own ceiling (12 hours)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = 2.0
    max_seconds: float = 300.0
    jitter: float = 0.2

    def delay(self, receive_count: int) -> int:
        """Seconds until the message is visible again, doubling with each receive."""
        exponent = max(0, receive_count - 1)
        raw = min(self.max_seconds, self.base_seconds * (2 ** min(exponent, 30)))
        spread = raw * self.jitter * random.random()
        return int(min(MAX_VISIBILITY_SECONDS, max(0.0, raw - spread)))
