"""Replicas share the write ceiling through a board in the store itself.

Each replica checks in every heartbeat; live replicas are those seen within `missed`
heartbeats, by the store's clock (so replicas on hosts with skewed clocks agree).
Each takes 1/live of the pool's ceiling. Replicas without a ceiling check in too,
with their write rate only, so that `ingest status` can tell how fast the pool drains."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ingest.errors import SinkUnavailable
from ingest.flow.ceiling import RateGate
from ingest.sinks.base import ReplicaBoard

log = logging.getLogger(__name__)

MISSED_HEARTBEATS: Final = 3
# A joining replica waits this many heartbeats before writing, so that the
# others have seen it and given up their part first: the pool never overshoots.
WARM_UP_HEARTBEATS: Final = 1.2


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Membership:
    live: int
    warming: bool


class ReplicaRegistry:
    def __init__(
        self,
        board: ReplicaBoard,
        interval_seconds: float = 5.0,
        *,
        missed: int = MISSED_HEARTBEATS,
        me: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._board = board
        self.interval = interval_seconds
        self.missed = missed
        self.me = me or replica_id()
        self._clock = clock
        self._joined: float | None = None
        self._settled = False  # once writing with a share, never warm up again

    def heartbeat(self, status: Mapping[str, Any] | None = None) -> Membership:
        """Checks this replica in; returns how many replicas are live. Raises
        SinkUnavailable when the store does not answer."""
        self._board.check_in(self.me, dict(status or {}))
        if self._joined is None:
            self._joined = self._clock()
        live = max(1, len(self.live()))
        waited = self._clock() - self._joined >= WARM_UP_HEARTBEATS * self.interval
        self._settled = self._settled or live == 1 or waited
        return Membership(live, warming=not self._settled)

    def live(self) -> list[dict[str, Any]]:
        return self._board.live(self.interval * self.missed)

    def deregister(self) -> None:
        try:
            self._board.leave(self.me)
        except SinkUnavailable as exc:
            log.warning("could not deregister replica %s: %s", self.me, exc)


class SharedCeiling:
    """The heartbeat job: keeps this replica checked in with its write rate and, under a
    ceiling (`gate`), its gate at its share."""

    def __init__(
        self,
        registry: ReplicaRegistry,
        gate: RateGate | None,
        *,
        handled: Callable[[], int] | None = None,
        per_message: Callable[[], float] | None = None,
    ) -> None:
        self.registry = registry
        self._gate = gate
        # Records written, ever: what the gate let through, else what the writers handled.
        self._handled = handled or (lambda: gate.granted if gate is not None else 0)
        self._per_message = per_message
        self._last: tuple[float, int] | None = None  # (monotonic time, records let through)

    def beat(self) -> None:
        try:
            membership = self.registry.heartbeat(self._status())
        except SinkUnavailable as exc:  # keep the last share; MongoDB down stops writes anyway
            log.warning("replica heartbeat failed: %s", exc)
            return
        if self._gate is None:
            return
        if membership.live != self._gate.live_replicas or membership.warming:
            log.info("%d live replicas%s", membership.live, " (warming up)" * membership.warming)
        self._gate.set_replicas(membership.live, warming=membership.warming)

    def leave(self) -> None:
        self.registry.deregister()

    def _status(self) -> dict[str, Any]:
        written, now = self._handled(), time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (written - self._last[1]) / (now - self._last[0])
        self._last = (now, written)
        status: dict[str, Any] = {"write_rate": round(rate, 1)}
        if self._per_message is not None:
            status["records_per_message"] = round(self._per_message(), 2)
        if self._gate is not None:
            ceiling = self._gate.ceiling
            status.update(ceiling=round(self._gate.rate, 1), pool_ceiling=ceiling.max_rate,
                          mode=ceiling.mode.value)  # fmt: skip
        return status
