"""The pollers' pace under a write ceiling: receive only what the writers can use soon."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

from ingest.flow.ceiling import RateGate

Sleep = Callable[[float], None]

# Pollers hold no more records than the writers can write in this long: enough to
# cover a receive's latency, short enough that replicas finishing a backlog hold
# little each (the pool's tail is one replica writing its holdings alone).
PACE_HORIZON_SECONDS: Final = 1.0


class Held(Protocol):
    def __len__(self) -> int: ...


class RecordsPerMessage:
    """How many records a message holds, learnt from what the write stage decoded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages = 0
        self._records = 0

    def observe(self, messages: int, records: int) -> None:
        with self._lock:
            self._messages += messages
            self._records += records

    @property
    def value(self) -> float:
        with self._lock:
            return self._records / self._messages if self._messages and self._records else 1.0


class Pacer:
    """How many messages a poller may receive: as many as keep those held (received,
    not yet settled) worth PACE_HORIZON_SECONDS of writing at the gate's rate, so no
    message waits received for long."""

    def __init__(
        self,
        gate: RateGate,
        held: Held,
        per_message: RecordsPerMessage,
        *,
        batch: int = 10,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._gate = gate
        self._held = held
        self._per_message = per_message
        self._batch = batch
        self._sleep = sleep

    def ready(self, timeout: float) -> int:
        """How many messages a poller may receive now; 0 after waiting up to `timeout`."""
        waited = 0.0
        while not (room := self._room()):
            if waited >= timeout:
                return 0
            self._sleep(0.05)
            waited += 0.05
        return room

    def _room(self) -> int:
        rate = self._gate.rate
        if rate <= 0 or self._gate.behind_seconds() > PACE_HORIZON_SECONDS:
            return 0
        held = len(self._held)
        room = int(rate * PACE_HORIZON_SECONDS / self._per_message.value) - held
        if held == 0:
            room = max(1, room)  # one message may be worth more than the horizon
        return min(self._batch, max(0, room))
