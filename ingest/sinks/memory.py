"""The sink seam in memory: a dictionary per collection with the same write modes and
outcomes, and a replica board, for unit tests and for measuring the pipeline itself."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bson
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument

from ingest.errors import SinkUnavailable
from ingest.sinks.base import (
    AFTER_FAILURE,
    DUPLICATE,
    INTERNAL_PREFIX,
    STALE,
    WRITTEN,
    Outcome,
    Retention,
    WriteMode,
    rejected,
)
from ingest.sinks.documents import duplicate_or_conflict, id_key, merge_refusal
from ingest.sinks.isolation import BulkRefused, isolate
from ingest.sinks.memory_updates import UpdateRefused, apply_update
from ingest.sinks.mongo_errors import UNENCODABLE
from ingest.sinks.operations import (
    DEFAULT_RECENT,
    OPS_FIELD,
    against,
    consumer_problem,
    lookup,
    stands_over,
    version_path,
)
from ingest.sinks.versions import against_stored, checked_version_field, read_version
from producer.wire import DELETE, Operation, Record, bson_problem, record_id

memory_key = id_key  # the name the tests know


def _stored(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """What is kept: a BSON document (format 2) as its bytes, read when looked at."""
    return document if isinstance(document, RawBSONDocument) else dict(document)


def _plain(document: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(document, RawBSONDocument):
        return bson.decode(document.raw)
    return dict(document)


class MemorySink:
    """`reject` refuses single records (as a server's per-record write error does);
    `refuse_bulk` fails any bulk that holds a matching record as a whole (as FerretDB
    does for a NUL in a string), `hang_up` making that a dropped connection."""

    def __init__(
        self,
        mode: WriteMode = WriteMode.INSERT_ONCE,
        *,
        reject: Callable[[Record], str | None] | None = None,
        refuse_bulk: Callable[[Record], str | None] | None = None,
        hang_up: bool = False,
        database: str = "memory",
        version_field: str | None = None,
        check_conflicts: bool = False,
        recent_operations: int = DEFAULT_RECENT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mode = mode
        self.database = database
        self.version_field = checked_version_field(mode, version_field)
        self._path = version_path(self.version_field)
        self.recent_operations = recent_operations
        # Deletes' tombstones, per collection: {v, op, at} by the _id's key.
        self.tombstones: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
        self._clock = clock
        self._check_conflicts = check_conflicts and mode is WriteMode.INSERT_ONCE
        self.collections: dict[str, dict[Any, Mapping[str, Any]]] = defaultdict(dict)
        self.retentions: dict[str, Retention] = {}
        self.unavailable = False  # flip to simulate an outage
        self.write_calls = 0
        self._reject = reject
        self._refuse_bulk = refuse_bulk
        self._hang_up = hang_up
        self._lock = threading.Lock()
        self._board = MemoryReplicaBoard()

    def ping(self) -> None:
        if self.unavailable:
            raise SinkUnavailable("memory sink is unavailable")

    def _answers(self) -> bool:
        return not self.unavailable

    def write(self, records: Sequence[Record]) -> list[Outcome]:
        return isolate(records, self._bulk, self._answers)

    def write_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        return isolate(records, self._bulk_ordered, self._answers, ordered=True)

    def _bulk(self, records: Sequence[Record]) -> list[Outcome]:
        self._check_bulk(records)
        with self._lock:
            return [self._write_one(record) for record in records]

    def _bulk_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        self._check_bulk(records)
        with self._lock:
            outcomes: list[Outcome] = []
            for index, record in enumerate(records):
                outcome = self._write_one(record)
                outcomes.append(outcome)
                if not outcome.settled:
                    return outcomes + [AFTER_FAILURE] * (len(records) - index - 1)
            return outcomes

    def _check_bulk(self, records: Sequence[Record]) -> None:
        self.ping()
        with self._lock:
            self.write_calls += 1
        for record in records:
            reason = self._refuse_bulk(record) if self._refuse_bulk else None
            if reason:
                raise BulkRefused(reason, connection_lost=self._hang_up)
            try:  # what the driver does before sending: some valid JSON is not BSON
                bson.encode(record.document)
            except UNENCODABLE as exc:
                raise BulkRefused(bson_problem(exc, record.document)) from exc

    def _write_one(self, record: Record) -> Outcome:
        reason = self._reject(record) if self._reject else None
        if reason:
            return rejected(reason)
        if record.operation is not None:
            return self._operate(record, record.operation)
        refusal = merge_refusal(record) if self.mode is WriteMode.MERGE else None
        if refusal:
            return rejected(refusal)
        version = read_version(record.document, self.version_field) if self.version_field else None
        if isinstance(version, str):
            return rejected(version)
        documents = self.collections[record.collection]
        try:
            key = memory_key(record_id(record))
        except BSONError as exc:  # what the server refuses: bytes that are not valid BSON
            return rejected(f"document is not valid BSON: {bson_problem(exc, {})}")
        existing = documents.get(key)
        if existing is None:
            if self._outlived(record, key):
                return STALE
            documents[key] = _stored(record.document)
            return WRITTEN
        if self.mode is WriteMode.INSERT_ONCE:
            return duplicate_or_conflict(record, existing) if self._check_conflicts else DUPLICATE
        if version is not None and self.version_field is not None:
            verdict = against_stored(version, existing, self.version_field)
            if verdict is not None:
                return verdict
        if self.mode is WriteMode.REPLACE:
            documents[key] = _stored(record.document)
            return WRITTEN
        try:
            documents[key] = {**_plain(existing), **_plain(record.document)}
        except (BSONError, ValueError) as exc:  # what the server refuses: invalid BSON
            return rejected(f"document is not valid BSON: {bson_problem(exc, {})}")
        return WRITTEN

    def _outlived(self, record: Record, key: Any) -> bool:
        """Would this write bring back a document a live tombstone says is deleted?"""
        tombstone = self.tombstones[record.collection].get(key)
        if tombstone is None:
            return False
        return not stands_over(record, self.version_field, tombstone)

    def _operate(self, record: Record, operation: Operation) -> Outcome:
        """An update or a delete, with MongoSink's outcomes (ingest/sinks/operations.py)."""
        problem = consumer_problem(operation, self.version_field)
        if problem:
            return rejected(problem)
        key = memory_key(operation.target)
        documents = self.collections[record.collection]
        stored = documents.get(key)
        current = _plain(stored) if stored is not None else None
        if operation.kind == DELETE:
            return self._delete(record.collection, key, operation, current)
        if current is not None:
            verdict = self._refusal(operation, current)
            if verdict is not None:
                return verdict
        elif self._outlived(record, key):
            return STALE
        try:
            changed = apply_update(
                current or {"_id": operation.target},
                self._with_bookkeeping(operation),
                inserting=current is None,
            )
        except UpdateRefused as exc:
            return rejected(str(exc))
        documents[key] = changed
        return WRITTEN

    def _refusal(self, operation: Operation, current: Mapping[str, Any]) -> Outcome | None:
        if operation.ordered:
            return against(operation.version, lookup(current, self._path), self._path)
        applied = lookup(current, OPS_FIELD)
        return DUPLICATE if isinstance(applied, list) and operation.id in applied else None

    def _with_bookkeeping(self, operation: Operation) -> dict[str, Any]:
        update = dict(operation.update or {})
        if operation.ordered:
            update["$set"] = {**update.get("$set", {}), self._path: operation.version}
        else:
            push = {"$each": [operation.id], "$slice": -self.recent_operations}
            update["$push"] = {**update.get("$push", {}), OPS_FIELD: push}
        return update

    def _delete(
        self, collection: str, key: Any, operation: Operation, current: Mapping[str, Any] | None
    ) -> Outcome:
        tombstones = self.tombstones[collection]
        tombstone = tombstones.get(key)
        if tombstone is not None and tombstone["op"] != operation.id:
            verdict = against(operation.version, tombstone["v"], "of the tombstone")
            if verdict is not None:
                return verdict
        tombstones[key] = {"v": operation.version, "op": operation.id, "at": self._clock()}
        if current is None:
            return WRITTEN
        verdict = against(operation.version, lookup(current, self._path), self._path)
        if verdict is not None:
            return verdict
        del self.collections[collection][key]
        return WRITTEN

    def sweep_tombstones(self, period_seconds: float) -> int:
        """Forgets tombstones older than the period (MongoDB's TTL index, or the sweep)."""
        cutoff = self._clock() - period_seconds
        removed = 0
        with self._lock:
            for tombstones in self.tombstones.values():
                expired = [key for key, t in tombstones.items() if t["at"] < cutoff]
                for key in expired:
                    del tombstones[key]
                removed += len(expired)
        return removed

    def count(self, collection: str | None = None) -> int:
        with self._lock:
            if collection is not None:
                return len(self.collections.get(collection, {}))
            return sum(len(docs) for docs in self.collections.values())

    def find(self, collection: str, _id: Any) -> Mapping[str, Any] | None:
        with self._lock:
            return self.collections.get(collection, {}).get(memory_key(_id))

    # ------------------------------------------------------------ operator tools

    def collection_counts(self) -> dict[str, int]:
        self.ping()
        with self._lock:
            return {
                name: len(docs)
                for name, docs in sorted(self.collections.items())
                if not name.startswith(INTERNAL_PREFIX)
            }

    def prepare(self, collections: Sequence[str]) -> list[str]:
        self.ping()
        with self._lock:
            for name in collections:
                self.collections.setdefault(name, {})
            return sorted(n for n in self.collections if not n.startswith(INTERNAL_PREFIX))

    def check_write(self) -> None:
        self.ping()

    def expire(self, collections: Sequence[str], retention: Retention) -> None:
        """Keeps the expiry as MongoDB keeps a TTL index; removing is the server's job."""
        self.ping()
        with self._lock:
            for name in collections:
                self.collections.setdefault(name, {})
                self.retentions[name] = retention

    def retention(self, collection: str) -> Retention | None:
        self.ping()
        with self._lock:
            return self.retentions.get(collection)

    def replica_board(self) -> MemoryReplicaBoard:
        return self._board


class MemoryReplicaBoard:
    """Replicas checking in, by this process's clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def check_in(self, replica: str, status: Mapping[str, Any]) -> None:
        with self._lock:
            self._seen[replica] = (self._clock(), dict(status))

    def live(self, within_seconds: float) -> list[dict[str, Any]]:
        now = self._clock()
        with self._lock:
            return [
                {"_id": replica, **status}
                for replica, (seen, status) in sorted(self._seen.items())
                if now - seen < within_seconds
            ]

    def leave(self, replica: str) -> None:
        with self._lock:
            self._seen.pop(replica, None)
