"""Where documents go: a small protocol, MongoDB behind it, and an in-memory twin.

A sink answers every record with a typed outcome (written, duplicate, rejected
with a reason, retry later). When the store itself is unreachable it raises
SinkUnavailable instead: "retry everything" is not the same as "this record is bad"."""

from __future__ import annotations

import enum
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from bson import ObjectId, json_util
from bson.errors import InvalidDocument
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    DocumentTooLarge,
    OperationFailure,
    PyMongoError,
)
from pymongo.write_concern import WriteConcern

from ingest.errors import SinkUnavailable
from ingest.messages import DUPLICATE, WRITTEN, Outcome, rejected, retry
from producer.wire import Record

DUPLICATE_KEY_CODES: Final = frozenset({11000, 11001})
# Per-document write errors that say "try again", not "this record is bad".
TRANSIENT_CODES: Final = frozenset(
    {6, 7, 24, 46, 50, 64, 89, 91, 112, 189, 202, 262, 462, 9001, 10107, 11600, 11602, 13435,
     13436, 16500}
)  # fmt: skip
# Codes that mean the server is overloaded: the rate limiter treats them as a strong signal.
# Extended JSON markers of values FerretDB 1.24 drops the connection on.
FERRETDB_UNSUPPORTED: Final = (
    '"$numberDecimal"',
    '{"$numberDouble":"NaN"}',
    '"$code"',
    '"$minKey"',
    '"$maxKey"',
)
OVERLOAD_CODES: Final = frozenset({50, 112, 262, 462, 16500})
# What the driver raises before sending when one document cannot become BSON
# (ints beyond 64 bits and lone surrogates come out of valid JSON).
UNENCODABLE: Final = (DocumentTooLarge, InvalidDocument, OverflowError, UnicodeEncodeError)


class WriteMode(enum.StrEnum):
    INSERT_ONCE = "insert-once"  # first write of an _id wins; duplicates collapse
    REPLACE = "replace"  # last write wins
    MERGE = "merge"  # $set of the record's fields, upserting


class DocumentSink(Protocol):
    def write(self, records: Sequence[Record]) -> list[Outcome]:
        """One outcome per record, in order. Raises SinkUnavailable for the whole batch."""
        ...

    def write_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        """Applies records strictly in order (FIFO groups). A record to retry stops
        the ones after it, which come back as RETRY without having been applied."""
        ...

    def ping(self) -> None:
        """Raises SinkUnavailable when the store cannot take writes."""
        ...


def _group_by_collection(records: Sequence[Record]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[record.collection].append(index)
    return groups


# ------------------------------------------------------------------- MongoDB


class MongoSink:
    """Unordered bulk writes keyed on _id.

    insert-once: unordered inserts; a duplicate-key error on _id means an earlier
    delivery already wrote the record. On FerretDB an insert costs a fifth of an
    upsert, and on MongoDB it is no slower, so this keeps upsert semantics at
    insert speed. `insert_strategy="set_on_insert"` gives the same result with
    $setOnInsert upserts (kept for the equivalence test and the benchmark).
    replace: inserts first, then only the duplicate-key conflicts as replace-upserts.
    merge: $set upserts of the record's fields.
    """

    def __init__(
        self,
        database: Database[dict[str, Any]],
        mode: WriteMode = WriteMode.INSERT_ONCE,
        *,
        write_concern: WriteConcern | None = None,
        insert_strategy: str = "insert",
    ) -> None:
        self._db = database
        self.mode = mode
        self._write_concern = write_concern
        self._insert_strategy = insert_strategy
        self._collections: dict[str, Collection[dict[str, Any]]] = {}
        self._ferretdb: bool | None = None

    @property
    def is_ferretdb(self) -> bool:
        """FerretDB speaks MongoDB's protocol but not every type: see `_unsupported`."""
        if self._ferretdb is None:
            try:
                info = self._db.client.admin.command("buildInfo")
            except PyMongoError as exc:
                raise SinkUnavailable(f"MongoDB unavailable: {type(exc).__name__}") from exc
            self._ferretdb = "ferretdbVersion" in info
        return self._ferretdb

    def _collection(self, name: str) -> Collection[dict[str, Any]]:
        found = self._collections.get(name)
        if found is None:
            found = self._db.get_collection(name, write_concern=self._write_concern)
            self._collections[name] = found
        return found

    def ping(self) -> None:
        try:
            self._db.client.admin.command("ping")
        except PyMongoError as exc:
            raise SinkUnavailable(f"MongoDB ping failed: {type(exc).__name__}") from exc

    def write(self, records: Sequence[Record]) -> list[Outcome]:
        outcomes: list[Outcome] = [WRITTEN] * len(records)
        for name, indexes in _group_by_collection(records).items():
            if self.is_ferretdb:
                indexes = self._reject_unsupported(records, indexes, outcomes)
            group = [records[i] for i in indexes]
            for index, outcome in zip(indexes, self._write_group(name, group), strict=True):
                outcomes[index] = outcome
        return outcomes

    @staticmethod
    def _reject_unsupported(
        records: Sequence[Record], indexes: list[int], outcomes: list[Outcome]
    ) -> list[int]:
        """FerretDB 1.24 drops the connection on Decimal128, failing the whole bulk as
        if the server were down; reject such records alone (real MongoDB stores them)."""
        kept = []
        for index in indexes:
            line = records[index].line
            if any(marker in line for marker in FERRETDB_UNSUPPORTED):
                outcomes[index] = rejected(
                    "FerretDB cannot store Decimal128, NaN, code or min/max key values"
                )
            else:
                kept.append(index)
        return kept

    def write_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        outcomes: list[Outcome] = [WRITTEN] * len(records)
        for name, indexes in _group_by_collection(records).items():
            if self.is_ferretdb:
                indexes = self._reject_unsupported(records, indexes, outcomes)
            collection = self._collection(name)
            group = [records[i] for i in indexes]
            for index, outcome in zip(indexes, self._ordered(collection, group), strict=True):
                outcomes[index] = outcome
        return _stop_after_first_retry(records, outcomes)

    def _ordered(
        self, collection: Collection[dict[str, Any]], records: list[Record]
    ) -> list[Outcome]:
        """Ordered bulks; a permanent error skips only its record, a transient one stops."""
        results: list[Outcome] = []
        remaining = records
        while remaining:
            try:
                outcomes = _bulk(collection, [self._ordered_op(r) for r in remaining], ordered=True)
            except UNENCODABLE as exc:
                outcomes = [rejected(f"MongoDB cannot store this document: {exc}")]
            failed = next((i for i, o in enumerate(outcomes) if o is not WRITTEN), None)
            if failed is None:
                return results + outcomes
            results += outcomes[: failed + 1]
            if not outcomes[failed].settled:
                return results + [_AFTER_FAILURE] * (len(remaining) - failed - 1)
            remaining = remaining[failed + 1 :]
        return results

    def _ordered_op(self, record: Record) -> Any:
        if self.mode is WriteMode.REPLACE:
            return _replace_op(record)
        if self.mode is WriteMode.MERGE:
            return _merge_op(record)
        return InsertOne(record.document)

    def _write_group(self, name: str, records: list[Record]) -> list[Outcome]:
        if not records:
            return []
        collection = self._collection(name)
        try:
            return self._write_mode(collection, records)
        except UNENCODABLE:
            # The driver refuses the whole bulk for one bad document: isolate it.
            return [self._write_one(collection, record) for record in records]

    def _write_mode(
        self, collection: Collection[dict[str, Any]], records: list[Record]
    ) -> list[Outcome]:
        if self.mode is WriteMode.MERGE:
            ops: list[Any] = [_merge_op(r) for r in records]
            return _bulk(collection, ops, on_duplicate=retry("duplicate key on upsert"))
        if self.mode is WriteMode.INSERT_ONCE and self._insert_strategy == "set_on_insert":
            ops = [_set_on_insert_op(r) for r in records]
            ids = [r.document["_id"] for r in records]
            return _bulk(collection, ops, on_duplicate=DUPLICATE, upsert_ids=ids)
        outcomes = _bulk(
            collection, [InsertOne(r.document) for r in records], on_duplicate=DUPLICATE
        )
        if self.mode is WriteMode.REPLACE:
            self._replace_duplicates(collection, records, outcomes)
        return outcomes

    def _replace_duplicates(
        self, collection: Collection[dict[str, Any]], records: list[Record], outcomes: list[Outcome]
    ) -> None:
        conflicts = [i for i, outcome in enumerate(outcomes) if outcome is DUPLICATE]
        if not conflicts:
            return
        ops: list[Any] = [_replace_op(records[i]) for i in conflicts]
        for index, outcome in zip(conflicts, _bulk(collection, ops, ordered=True), strict=True):
            outcomes[index] = outcome

    def _write_one(self, collection: Collection[dict[str, Any]], record: Record) -> Outcome:
        try:
            return self._write_mode(collection, [record])[0]
        except UNENCODABLE as exc:
            return rejected(f"MongoDB cannot store this document: {exc}")


_AFTER_FAILURE: Final = retry("not applied: an earlier record of its group must be retried first")


def _stop_after_first_retry(records: Sequence[Record], outcomes: list[Outcome]) -> list[Outcome]:
    """Records of other collections after the group's first retry may already be applied;
    retrying them too re-applies them after it, so the final state follows the group's order."""
    first = next((i for i, o in enumerate(outcomes) if not o.settled), None)
    if first is None:
        return outcomes
    return outcomes[: first + 1] + [
        o if not o.settled else _AFTER_FAILURE for o in outcomes[first + 1 :]
    ]


def _merge_op(record: Record) -> UpdateOne:
    doc = record.document
    fields = {k: v for k, v in doc.items() if k != "_id"}
    update = {"$set": fields} if fields else {"$setOnInsert": {}}
    return UpdateOne({"_id": doc["_id"]}, update, upsert=True)


def _set_on_insert_op(record: Record) -> UpdateOne:
    doc = record.document
    fields = {k: v for k, v in doc.items() if k != "_id"}
    return UpdateOne({"_id": doc["_id"]}, {"$setOnInsert": fields}, upsert=True)


def _replace_op(record: Record) -> ReplaceOne[dict[str, Any]]:
    return ReplaceOne({"_id": record.document["_id"]}, record.document, upsert=True)


def _bulk(
    collection: Collection[dict[str, Any]],
    ops: list[Any],
    *,
    on_duplicate: Outcome = DUPLICATE,
    ordered: bool = False,
    upsert_ids: list[Any] | None = None,
) -> list[Outcome]:
    """One bulk write; per-op outcomes. With upsert_ids (each op's _id), an upsert that
    found its document already there ($setOnInsert left it alone) is a duplicate."""
    outcomes: list[Outcome] = [WRITTEN] * len(ops)
    upserted: list[Any] = []
    try:
        result = collection.bulk_write(ops, ordered=ordered)
        upserted = list((result.upserted_ids or {}).values())
    except BulkWriteError as exc:
        _apply_write_errors(exc.details, outcomes, on_duplicate, ordered=ordered)
        upserted = [u["_id"] for u in exc.details.get("upserted", [])]
    except UNENCODABLE:
        raise
    except OperationFailure as exc:
        raise SinkUnavailable(f"MongoDB refused the write: {exc.code} {_short(exc)}") from exc
    except PyMongoError as exc:
        raise SinkUnavailable(f"MongoDB unavailable: {type(exc).__name__}") from exc
    if upsert_ids is not None:
        _mark_matched_as_duplicates(outcomes, upsert_ids, upserted)
    return outcomes


def _mark_matched_as_duplicates(
    outcomes: list[Outcome], ids: list[Any], upserted: list[Any]
) -> None:
    # Matched by _id, not by the reported op index: FerretDB 1.24 reports upserted
    # indexes wrong (see tests/integration/test_insert_strategies.py).
    fresh = [json_util.dumps(i) for i in upserted]
    for index, outcome in enumerate(outcomes):
        key = json_util.dumps(ids[index])
        if outcome is WRITTEN:
            if key in fresh:
                fresh.remove(key)  # the first op with this _id inserted it
            else:
                outcomes[index] = DUPLICATE


def _apply_write_errors(
    details: Mapping[str, Any], outcomes: list[Outcome], on_duplicate: Outcome, *, ordered: bool
) -> None:
    failed_at = len(outcomes)
    for error in details.get("writeErrors", []):
        index, code = int(error["index"]), int(error.get("code", 0))
        failed_at = min(failed_at, index)
        if code in DUPLICATE_KEY_CODES:
            outcomes[index] = on_duplicate
        elif code in TRANSIENT_CODES:
            outcomes[index] = retry(f"MongoDB error {code}: {error.get('errmsg', '')[:200]}")
        else:
            outcomes[index] = rejected(f"MongoDB error {code}: {error.get('errmsg', '')[:300]}")
    if ordered:
        # An ordered bulk stops at its first error: what follows was never tried.
        for index in range(failed_at + 1, len(outcomes)):
            outcomes[index] = retry("not attempted after an earlier error in an ordered write")
    if details.get("writeConcernErrors"):
        # Written on the primary but not acknowledged as asked: write again later;
        # the next attempt collapses into a duplicate.
        for index, outcome in enumerate(outcomes):
            if outcome is WRITTEN:
                outcomes[index] = retry("write concern not satisfied")


def _short(exc: PyMongoError) -> str:
    return str(exc).splitlines()[0][:200]


# ----------------------------------------------------------------- in memory


def _memory_key(value: Any) -> Any:
    # ObjectIds, strings and numbers are their own keys; documents and lists are not hashable.
    plain = isinstance(value, ObjectId | str | int | float) and not isinstance(value, bool)
    return value if plain else json_util.dumps(value)


class MemorySink:
    """A dictionary per collection with the same write modes and outcomes."""

    def __init__(
        self,
        mode: WriteMode = WriteMode.INSERT_ONCE,
        *,
        reject: Callable[[Record], str | None] | None = None,
    ) -> None:
        self.mode = mode
        self.collections: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.unavailable = False  # flip to simulate an outage
        self.write_calls = 0
        self._reject = reject
        self._lock = threading.Lock()

    def ping(self) -> None:
        if self.unavailable:
            raise SinkUnavailable("memory sink is unavailable")

    def write(self, records: Sequence[Record]) -> list[Outcome]:
        self.ping()
        with self._lock:
            self.write_calls += 1
            return [self._write_one(record) for record in records]

    def write_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        self.ping()
        with self._lock:
            self.write_calls += 1
            outcomes: list[Outcome] = []
            for index, record in enumerate(records):
                outcome = self._write_one(record)
                outcomes.append(outcome)
                if not outcome.settled:
                    return outcomes + [_AFTER_FAILURE] * (len(records) - index - 1)
            return outcomes

    def _write_one(self, record: Record) -> Outcome:
        reason = self._reject(record) if self._reject else None
        if reason:
            return rejected(reason)
        documents = self.collections[record.collection]
        key = _memory_key(record.document["_id"])
        existing = documents.get(key)
        if existing is None:
            documents[key] = dict(record.document)
            return WRITTEN
        if self.mode is WriteMode.INSERT_ONCE:
            return DUPLICATE
        if self.mode is WriteMode.REPLACE:
            documents[key] = dict(record.document)
        else:
            existing.update(record.document)
        return WRITTEN

    def count(self, collection: str | None = None) -> int:
        with self._lock:
            if collection is not None:
                return len(self.collections.get(collection, {}))
            return sum(len(docs) for docs in self.collections.values())
