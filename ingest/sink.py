"""Where documents go: a small protocol, MongoDB behind it, and an in-memory twin.

A sink answers every record with a typed outcome (written, duplicate, rejected
with a reason, retry later). When the store itself is unreachable it raises
SinkUnavailable instead: "retry everything" is not the same as "this record is bad"."""

from __future__ import annotations

import contextlib
import enum
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import bson
from bson import ObjectId, json_util
from bson.errors import InvalidDocument
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DocumentTooLarge,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.write_concern import WriteConcern

from ingest.errors import SinkUnavailable
from ingest.isolation import AFTER_FAILURE, BulkRefused, isolate
from ingest.messages import DUPLICATE, WRITTEN, Outcome, rejected, retry
from producer.wire import Record, bson_problem

Document = dict[str, Any]

DUPLICATE_KEY_CODES: Final = frozenset({11000, 11001})
# Per-document write errors that say "try again", not "this record is bad".
TRANSIENT_CODES: Final = frozenset(
    {6, 7, 24, 46, 50, 64, 89, 91, 112, 189, 202, 262, 462, 9001, 10107, 11600, 11602, 13435,
     13436, 16500}
)  # fmt: skip
# Whole-command errors about access or resources rather than the records: retry them all.
# (Unauthorized, AuthenticationFailed, OutOfDiskSpace.)
ENVIRONMENT_CODES: Final = frozenset({13, 18, 14031})
# What the driver raises before sending when one document cannot become BSON
# (ints beyond 64 bits and lone surrogates come out of valid JSON).
UNENCODABLE: Final = (DocumentTooLarge, InvalidDocument, OverflowError, UnicodeEncodeError)
# The server hung up mid-bulk (NetworkTimeout, its subclass, means slow instead).
_HUNG_UP: Final = (AutoReconnect,)


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

    def _answers(self) -> bool:
        """The evidence for a bulk that failed as a whole: does the server still answer?"""
        try:
            self.ping()
        except SinkUnavailable:
            return False
        return True

    def write(self, records: Sequence[Record]) -> list[Outcome]:
        return self._write(records, ordered=False)

    def write_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        return self._write(records, ordered=True)

    def _write(self, records: Sequence[Record], *, ordered: bool) -> list[Outcome]:
        outcomes: list[Outcome] = [WRITTEN] * len(records)
        for name, indexes in _group_by_collection(records).items():
            collection = self._collection(name)

            def bulk(
                part: Sequence[Record], into: Collection[Document] = collection
            ) -> list[Outcome]:
                return self._write_bulk(into, part, ordered=ordered)

            group = [records[i] for i in indexes]
            isolated = isolate(group, bulk, self._answers, ordered=ordered)
            for index, outcome in zip(indexes, isolated, strict=True):
                outcomes[index] = outcome
        return _stop_after_first_retry(outcomes) if ordered else outcomes

    def _write_bulk(
        self, collection: Collection[Document], records: Sequence[Record], *, ordered: bool
    ) -> list[Outcome]:
        """One bulk in the configured mode. Raises BulkRefused when the store (or the
        driver, for a document that cannot become BSON) fails it as a whole."""
        try:
            if ordered:
                return self._ordered(collection, records)
            return self._unordered(collection, records)
        except UNENCODABLE as exc:
            raise BulkRefused(bson_problem(exc, records[0].document)) from exc
        except _HUNG_UP as exc:
            raise BulkRefused(self._hang_up_reason(), connection_lost=True) from exc

    def _hang_up_reason(self) -> str:
        reason = "the database closed the connection each time this record was written"
        with contextlib.suppress(SinkUnavailable):
            if self.is_ferretdb:
                reason += " (FerretDB does so for values it cannot store, e.g. Decimal128 or NaN)"
        return reason

    def _ordered(
        self, collection: Collection[Document], records: Sequence[Record]
    ) -> list[Outcome]:
        """Ordered bulks; a permanent error skips only its record, a transient one stops."""
        results: list[Outcome] = []
        remaining = list(records)
        while remaining:
            ops = [self._ordered_op(record) for record in remaining]
            outcomes = _bulk(collection, ops, ordered=True)
            failed = next((i for i, o in enumerate(outcomes) if o.kind is not WRITTEN.kind), None)
            if failed is None:
                return results + outcomes
            results += outcomes[: failed + 1]
            if not outcomes[failed].settled:
                return results + [AFTER_FAILURE] * (len(remaining) - failed - 1)
            remaining = remaining[failed + 1 :]
        return results

    def _ordered_op(self, record: Record) -> Any:
        if self.mode is WriteMode.REPLACE:
            return _replace_op(record)
        if self.mode is WriteMode.MERGE:
            return _merge_op(record)
        return InsertOne(record.document)

    def _unordered(
        self, collection: Collection[Document], records: Sequence[Record]
    ) -> list[Outcome]:
        if self.mode is WriteMode.MERGE:
            ops: list[Any] = [_merge_op(r) for r in records]
            return _bulk(collection, ops, on_duplicate=retry("duplicate key on upsert"))
        if self.mode is WriteMode.INSERT_ONCE and self._insert_strategy == "set_on_insert":
            ops = [_set_on_insert_op(r) for r in records]
            ids = [r.document["_id"] for r in records]
            return _bulk(collection, ops, on_duplicate=DUPLICATE, upsert_ids=ids)
        inserts = [InsertOne(r.document) for r in records]
        outcomes = _bulk(collection, inserts, on_duplicate=DUPLICATE)
        if self.mode is WriteMode.REPLACE:
            self._replace_duplicates(collection, records, outcomes)
        return outcomes

    def _replace_duplicates(
        self, collection: Collection[Document], records: Sequence[Record], outcomes: list[Outcome]
    ) -> None:
        conflicts = [i for i, o in enumerate(outcomes) if o.kind is DUPLICATE.kind]
        if not conflicts:
            return
        ops: list[Any] = [_replace_op(records[i]) for i in conflicts]
        for index, outcome in zip(conflicts, _bulk(collection, ops, ordered=True), strict=True):
            outcomes[index] = outcome


def _stop_after_first_retry(outcomes: list[Outcome]) -> list[Outcome]:
    """Records of other collections after the group's first retry may already be applied;
    retrying them too re-applies them after it, so the final state follows the group's order."""
    first = next((i for i, o in enumerate(outcomes) if not o.settled), None)
    if first is None:
        return outcomes
    return outcomes[: first + 1] + [
        o if not o.settled else AFTER_FAILURE for o in outcomes[first + 1 :]
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
    collection: Collection[Document],
    ops: list[Any],
    *,
    on_duplicate: Outcome = DUPLICATE,
    ordered: bool = False,
    upsert_ids: list[Any] | None = None,
) -> list[Outcome]:
    """One bulk write; per-op outcomes. With upsert_ids (each op's _id), an upsert that
    found its document already there ($setOnInsert left it alone) is a duplicate.

    Classified by what the server did, not by the exception's type: it answered per
    operation (outcomes), answered with one error for the whole command (BulkRefused,
    unless the error names the server's own state: then every op is retried), hung up
    (AutoReconnect, re-raised for the caller to check), was too slow (retries), or
    could not be reached at all (SinkUnavailable)."""
    outcomes: list[Outcome] = [WRITTEN] * len(ops)
    upserted: list[Any] = []
    try:
        result = collection.bulk_write(ops, ordered=ordered)
        upserted = list((result.upserted_ids or {}).values())
    except BulkWriteError as exc:
        _apply_write_errors(exc.details, outcomes, on_duplicate, ordered=ordered)
        upserted = [u["_id"] for u in exc.details.get("upserted", [])]
    except OperationFailure as exc:
        reason = server_reason(exc.code, exc.details or {}, str(exc))
        if _about_the_server(exc):
            return [retry(reason)] * len(ops)
        raise BulkRefused(reason) from exc
    except (NetworkTimeout, ExecutionTimeout) as exc:  # slow is not refused
        return [retry(f"the database did not answer in time: {_short(exc)}")] * len(ops)
    except ServerSelectionTimeoutError as exc:
        raise SinkUnavailable(f"MongoDB unreachable: {_short(exc)}") from exc
    except _HUNG_UP:
        raise
    except PyMongoError as exc:
        raise SinkUnavailable(f"MongoDB unavailable: {type(exc).__name__}") from exc
    if upsert_ids is not None:
        _mark_matched_as_duplicates(outcomes, upsert_ids, upserted)
    return outcomes


def _about_the_server(exc: OperationFailure) -> bool:
    """Whole-command errors that name the server's state or our permissions, not a record."""
    return (
        exc.code in TRANSIENT_CODES
        or exc.code in ENVIRONMENT_CODES
        or exc.has_error_label("RetryableWriteError")
    )


# FerretDB prefixes PostgreSQL's message with its Go call frames: [file.go:12 pkg.Func].
_GO_FRAMES: Final = re.compile(r"^(?:\[[^\]]*\.go:\d+[^\]]*\]\s*)+(?:ERROR:\s*)?")


def server_reason(code: int | None, details: Mapping[str, Any], fallback: str) -> str:
    """The server's own code and message, as the record's dead-letter reason."""
    message = str(details.get("errmsg") or fallback).splitlines()[0]
    message = _GO_FRAMES.sub("", message)[:300]
    name = details.get("codeName")
    label = f"error {code} {name}" if name else f"error {code}"
    return f"refused by the database ({label}): {message}"


def _mark_matched_as_duplicates(
    outcomes: list[Outcome], ids: list[Any], upserted: list[Any]
) -> None:
    # Matched by _id, not by the reported op index: FerretDB 1.24 reports upserted
    # indexes wrong (see tests/integration/test_insert_strategies.py).
    fresh = [json_util.dumps(i) for i in upserted]
    for index, outcome in enumerate(outcomes):
        key = json_util.dumps(ids[index])
        if outcome.kind is WRITTEN.kind:
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
        reason = server_reason(code, error, "")
        if code in DUPLICATE_KEY_CODES:
            outcomes[index] = on_duplicate
        elif code in TRANSIENT_CODES:
            outcomes[index] = retry(reason)
        else:
            outcomes[index] = rejected(reason)
    if ordered:
        # An ordered bulk stops at its first error: what follows was never tried.
        for index in range(failed_at + 1, len(outcomes)):
            outcomes[index] = retry("not attempted after an earlier error in an ordered write")
    if details.get("writeConcernErrors"):
        # Written on the primary but not acknowledged as asked: write again later;
        # the next attempt collapses into a duplicate.
        for index, outcome in enumerate(outcomes):
            if outcome.kind is WRITTEN.kind:
                outcomes[index] = retry("write concern not satisfied")


def _short(exc: PyMongoError) -> str:
    return str(exc).splitlines()[0][:200]


# ----------------------------------------------------------------- in memory


def _memory_key(value: Any) -> Any:
    # ObjectIds, strings and numbers are their own keys; documents and lists are not hashable.
    plain = isinstance(value, ObjectId | str | int | float) and not isinstance(value, bool)
    return value if plain else json_util.dumps(value)


class MemorySink:
    """A dictionary per collection with the same write modes and outcomes.

    `reject` refuses single records (as a server's per-record write error does);
    `refuse_bulk` fails any bulk that holds a matching record as a whole (as FerretDB
    does for a NUL in a string), `hang_up` making that a dropped connection."""

    def __init__(
        self,
        mode: WriteMode = WriteMode.INSERT_ONCE,
        *,
        reject: Callable[[Record], str | None] | None = None,
        refuse_bulk: Callable[[Record], str | None] | None = None,
        hang_up: bool = False,
    ) -> None:
        self.mode = mode
        self.collections: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.unavailable = False  # flip to simulate an outage
        self.write_calls = 0
        self._reject = reject
        self._refuse_bulk = refuse_bulk
        self._hang_up = hang_up
        self._lock = threading.Lock()

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
