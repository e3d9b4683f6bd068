"""Tombstones on MongoDB: written by deletes, read by every write that may have brought
a deleted document back, and expired after their period (ingest/sinks/operations.py).

A tombstone is `{_id, v: version, op: the delete's id, at: the server's time}` in
`_ingest_tombstones.<collection>`. It is written (a guarded upsert: only over a lower
version) before its document is deleted; after each bulk, the _ids written are looked
up there in one find, and a write a tombstone outlives is undone by the same guarded
delete (so a document brought back by a newer write stays).

Expiry: a TTL index on `at` where the server keeps one (MongoDB: its monitor deletes
them, every 60 s); where it refuses one (FerretDB 1.24: error 238), `ingest run`
deletes the expired tombstones itself (sweep)."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from ingest.sinks.base import DUPLICATE, STALE, Outcome, OutcomeKind
from ingest.sinks.documents import id_key
from ingest.sinks.modes import Document, Kind, Statement
from ingest.sinks.mongo_bulk import Target, bulk
from ingest.sinks.mongo_clashes import UniqueIndexes
from ingest.sinks.mongo_errors import server_reason
from ingest.sinks.operations import (
    TOMBSTONES_PREFIX,
    is_delete,
    judge_tombstone,
    stands_over,
    tombstones_of,
)
from ingest.sinks.versions import guard
from producer.wire import Operation, Record, record_id

log = logging.getLogger(__name__)


class Tombstones:
    def __init__(
        self, database: Database[Document], version_path: str, version_field: str | None
    ) -> None:
        self._db = database
        self._path = version_path  # where documents keep the version a delete compares
        self._version_field = version_field  # an insert's version (--version-field)
        self._indexes = UniqueIndexes()
        self._lock = threading.Lock()
        self._ttl: dict[str, bool] = {}  # companion -> the server keeps a TTL index on it

    def companion(self, collection: Collection[Document]) -> Collection[Document]:
        return self._db.get_collection(
            tombstones_of(collection.name), write_concern=collection.write_concern
        )

    def write(
        self, collection: Collection[Document], operations: Sequence[Operation]
    ) -> list[Outcome | None]:
        """Each delete's tombstone; None where the delete may go on to its document."""
        companion = self.companion(collection)
        statements = [
            Statement(
                Kind.UPDATE,
                op.target,
                {"$set": {"v": op.version, "op": op.id}, "$currentDate": {"at": True}},
                {"_id": op.target, **guard("v", op.version)},
                guarded=True,
            )
            for op in operations
        ]
        found = bulk(Target(companion, DUPLICATE, self._indexes), statements)
        refused = [i for i, o in enumerate(found) if o.kind is OutcomeKind.DUPLICATE]
        verdicts: list[Outcome | None] = [
            None if o.kind is OutcomeKind.WRITTEN else o for o in found
        ]
        for index in refused:
            stored = companion.find_one({"_id": operations[index].target})
            verdicts[index] = judge_tombstone(operations[index], stored)
        return verdicts

    def undo_outlived(
        self,
        collection: Collection[Document],
        records: Sequence[Record],
        outcomes: list[Outcome],
    ) -> None:
        """Writes a tombstone outlives are undone (their outcome turns STALE)."""
        candidates = [
            i
            for i, o in enumerate(outcomes)
            if o.kind in (OutcomeKind.WRITTEN, OutcomeKind.DUPLICATE) and not is_delete(records[i])
        ]
        if not candidates:
            return
        found = self._find(collection, [record_id(records[i]) for i in candidates])
        for index in candidates:
            target = record_id(records[index])
            tombstone = found.get(id_key(target))
            if tombstone is None or stands_over(records[index], self._version_field, tombstone):
                continue
            undone = collection.delete_one({"_id": target, **guard(self._path, tombstone["v"])})
            if undone.deleted_count:
                outcomes[index] = STALE

    def _find(
        self, collection: Collection[Document], ids: list[Any]
    ) -> dict[Any, Mapping[str, Any]]:
        """The tombstones of these _ids, in one find: the companion holds only live
        tombstones (and none at all for a collection nothing was deleted from), so
        even FerretDB's scan for $in reads only those."""
        companion = self.companion(collection)
        return {
            id_key(found["_id"]): found
            for found in companion.find({"_id": {"$in": ids}}, {"v": 1, "at": 1})
        }

    # ---------------------------------------------------------------- expiry

    def sweep(self, period_seconds: float, now: datetime.datetime) -> int:
        """Expires tombstones older than the period: a TTL index where the server keeps
        one, else deletes them now. Returns how many it deleted itself."""
        removed = 0
        names = [n for n in self._db.list_collection_names() if n.startswith(TOMBSTONES_PREFIX)]
        for name in names:
            companion = self._db[name]
            if self._expires_itself(companion, int(period_seconds)):
                continue
            cutoff = now - datetime.timedelta(seconds=period_seconds)
            removed += companion.delete_many({"at": {"$lt": cutoff}}).deleted_count
        return removed

    def _expires_itself(self, companion: Collection[Document], seconds: int) -> bool:
        """A TTL index on `at` with this period, made once per process: the server's
        answer is the evidence (FerretDB 1.24 refuses expireAfterSeconds, error 238)."""
        with self._lock:
            known = self._ttl.get(companion.name)
        if known is not None:
            return known
        try:
            _ttl_index(companion, max(1, seconds))
            keeps = True
        except OperationFailure as exc:
            reason = server_reason(exc.code, exc.details or {}, str(exc))
            log.info("tombstones in %s expire by ingest run's sweep: the server refused a TTL"
                     " index (%s)", companion.name, reason)  # fmt: skip
            keeps = False
        with self._lock:
            self._ttl[companion.name] = keeps
        return keeps


def _ttl_index(companion: Collection[Document], seconds: int) -> None:
    index = next((i for i in companion.list_indexes() if list(i["key"]) == ["at"]), None)
    if index is None:
        companion.create_index([("at", ASCENDING)], expireAfterSeconds=seconds)
    elif index.get("expireAfterSeconds") != seconds:
        companion.database.command(
            "collMod", companion.name,
            index={"keyPattern": {"at": 1}, "expireAfterSeconds": seconds},
        )  # fmt: skip
