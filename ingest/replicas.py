"""Replicas share the write ceiling through a small collection in MongoDB itself.

Each replica upserts {_id, seen} every heartbeat; live replicas are those seen
within `missed` heartbeats. Both `seen` and "now" come from the server's clock
($currentDate and hello.localTime), so replicas on hosts with skewed clocks
still agree. Works on MongoDB and FerretDB ($currentDate, $gt on dates)."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from ingest.metrics import Metrics
from ingest.ratelimit import RateGate
from ingest.settings import Settings

log = logging.getLogger(__name__)

COLLECTION = "_ingest_replicas"
MISSED_HEARTBEATS = 3
# A joining replica waits this many heartbeats before writing, so that the
# others have seen it and given up their part first: the pool never overshoots.
WARM_UP_HEARTBEATS = 1.2


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Membership:
    live: int
    warming: bool


class ReplicaRegistry:
    def __init__(
        self,
        collection: Collection[dict[str, Any]],
        interval_seconds: float = 5.0,
        *,
        missed: int = MISSED_HEARTBEATS,
        me: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collection = collection
        self.interval = interval_seconds
        self.missed = missed
        self.me = me or replica_id()
        self._clock = clock
        self._joined: float | None = None
        self._settled = False  # once writing with a share, never warm up again

    def heartbeat(self, status: Mapping[str, Any] | None = None) -> Membership:
        """Registers (or refreshes) this replica; returns how many replicas are live."""
        self._collection.update_one(
            {"_id": self.me},
            {"$currentDate": {"seen": True}, "$set": dict(status or {})},
            upsert=True,
        )
        if self._joined is None:
            self._joined = self._clock()
        live = max(1, len(self.live()))
        waited = self._clock() - self._joined >= WARM_UP_HEARTBEATS * self.interval
        self._settled = self._settled or live == 1 or waited
        return Membership(live, warming=not self._settled)

    def live(self) -> list[dict[str, Any]]:
        """The live replicas' documents, by the server's clock."""
        return live_replicas(self._collection, self.interval * self.missed)

    def deregister(self) -> None:
        try:
            self._collection.delete_one({"_id": self.me})
        except PyMongoError as exc:
            log.warning("could not deregister replica %s: %s", self.me, exc)


def live_replicas(collection: Collection[dict[str, Any]], within: float) -> list[dict[str, Any]]:
    now = server_time(collection)
    since = now - datetime.timedelta(seconds=within)
    return list(collection.find({"seen": {"$gt": since}}).sort("_id"))


def server_time(collection: Collection[dict[str, Any]]) -> datetime.datetime:
    hello = collection.database.client.admin.command("hello")
    local = hello.get("localTime")
    if isinstance(local, datetime.datetime):
        return local
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # tolerate: ours


class SharedCeiling:
    """The heartbeat job: keeps this replica registered and its gate at its share."""

    def __init__(self, registry: ReplicaRegistry, gate: RateGate, metrics: Metrics) -> None:
        self.registry = registry
        self._gate = gate
        self._metrics = metrics
        self._last: tuple[float, float] | None = None  # (monotonic time, records written)

    def beat(self) -> None:
        try:
            membership = self.registry.heartbeat(self._status())
        except PyMongoError as exc:  # keep the last share; MongoDB down stops writes anyway
            log.warning("replica heartbeat failed: %s", exc)
            return
        if membership.live != self._gate.live_replicas or membership.warming:
            log.info("%d live replicas%s", membership.live, " (warming up)" * membership.warming)
        self._gate.set_replicas(membership.live, warming=membership.warming)

    def leave(self) -> None:
        self.registry.deregister()

    def _status(self) -> dict[str, Any]:
        written = self._metrics.registry.get_sample_value("ingest_records_written_total") or 0.0
        now = time.monotonic()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (written - self._last[1]) / (now - self._last[0])
        self._last = (now, written)
        ceiling = self._gate.ceiling
        return {
            "ceiling": round(self._gate.rate, 1), "pool_ceiling": ceiling.max_rate,
            "mode": ceiling.mode, "write_rate": round(rate, 1),
        }  # fmt: skip


def registry_for(settings: Settings, client: MongoClient[dict[str, Any]]) -> ReplicaRegistry | None:
    """The registry when a ceiling is set (replicas share it), else None."""
    if settings.max_write_rate <= 0:
        return None
    collection = client[settings.database][COLLECTION]
    return ReplicaRegistry(collection, settings.replica_heartbeat_seconds)
