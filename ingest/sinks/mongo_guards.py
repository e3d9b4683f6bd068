"""Writes that check what is stored: version-guarded replace and merge, and telling a
conflicting duplicate from a redelivery in insert-once. Both read the stored
documents only for records the server refused, so the normal path pays nothing.

Version-guarded, unordered: inserts first (a new _id always wins, and on FerretDB an
insert costs a fifth of an upsert), then for the _ids already stored an upsert whose
filter is {_id, FIELD: {$lt: version}} (or no FIELD at all). A duplicate-key error
means the stored document did not match (mongo_clashes.py tells it from a clash on
another unique index); a read of it then says why: a version that is not lower (STALE,
or DUPLICATE when equal), one of another kind (REJECTED), or a concurrent write of the
same _id (RETRY).

Guarded upserts are refused routinely (every stale record), so they go in one bulk only
where the server answers a bulk with a refused statement per statement and goes on past
it: MongoDB does, FerretDB 1.24 does not (it leaves `nModified` out of the reply and
stops an unordered update at its first failure; tests/integration/test_ferretdb_differences.py).
The sink finds out once, from the server's own answer (mongo_bulk.failed_updates_readable),
and otherwise sends them one statement each."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from ingest.sinks.base import (
    DUPLICATE,
    WRITTEN,
    Outcome,
    OutcomeKind,
    WriteMode,
    rejected,
    retry,
)
from ingest.sinks.documents import duplicate_or_conflict, id_key
from ingest.sinks.modes import Document, Statement, guarded, insert
from ingest.sinks.mongo_bulk import Target, bulk, in_order, one_at_a_time
from ingest.sinks.mongo_clashes import UniqueIndexes
from ingest.sinks.versions import Version, against_stored, read_version
from producer.wire import Record, record_id

log = logging.getLogger(__name__)
_RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


def write_guarded(
    collection: Collection[Document],
    records: Sequence[Record],
    mode: WriteMode,
    field: str,
    *,
    ordered: bool,
    indexes: UniqueIndexes,
    in_bulk: bool,
) -> list[Outcome]:
    outcomes: list[Outcome] = [WRITTEN] * len(records)
    versions: dict[int, Version] = {}
    for index, record in enumerate(records):
        version = read_version(record.document, field)
        if isinstance(version, str):
            outcomes[index] = rejected(version)
        else:
            versions[index] = version
    todo = list(versions)
    refused = Target(collection, DUPLICATE, indexes)  # same _id: judged below
    if not ordered:
        _fill(outcomes, todo, bulk(refused, [insert(records[i]) for i in todo]))
        todo = _refused(outcomes, todo)
    statements = [guarded(mode, records[i], field) for i in todo]
    attempted = _upsert(refused, statements, ordered=ordered, in_bulk=in_bulk)
    _fill(outcomes, todo, attempted)
    judged = _refused(outcomes, todo)
    if judged:
        found = _judge(
            collection, [records[i] for i in judged], [versions[i] for i in judged], field
        )
        _fill(outcomes, judged, found)
    return outcomes


def _upsert(
    target: Target, statements: list[Statement], *, ordered: bool, in_bulk: bool
) -> list[Outcome]:
    """A refused guarded upsert must be read as refused, and what follows it applied:
    in bulk where the server's replies show both, else one statement each."""
    if not in_bulk:
        return one_at_a_time(target, statements, ordered=ordered)
    return in_order(target, statements) if ordered else bulk(target, statements)


def _refused(outcomes: list[Outcome], indexes: list[int]) -> list[int]:
    """The records the server answered with a duplicate-key error."""
    return [i for i in indexes if outcomes[i].kind is OutcomeKind.DUPLICATE]


def _fill(outcomes: list[Outcome], indexes: list[int], found: list[Outcome]) -> None:
    for index, outcome in zip(indexes, found, strict=True):
        outcomes[index] = outcome


def _judge(
    collection: Collection[Document],
    records: list[Record],
    versions: list[Version],
    field: str,
) -> list[Outcome]:
    """Why the stored documents refused these guarded writes."""
    try:
        stored = _stored(collection, records, {field: 1})
    except PyMongoError as exc:
        return [retry(f"could not read the stored version: {_short(exc)}")] * len(records)
    outcomes = []
    for record, version in zip(records, versions, strict=True):
        found = stored.get(id_key(record_id(record)))
        if found is None:
            outcomes.append(retry("the stored document of this _id went away during the write"))
            continue
        verdict = against_stored(version, found, field)
        outcomes.append(verdict or retry("a concurrent write of this _id got in the way"))
    return outcomes


class CheckBudget:
    """Keeps a check to a share of the time, over every writer: after a check that
    took d seconds, the next starts no sooner than d * (1 / share - 1) later.

    The conflict check reads each duplicate by _id, which takes about a millisecond on
    both servers. It used one find with $in, which FerretDB 1.24 answers by scanning
    the collection (seconds once it holds ~100,000 documents): checking every bulk that
    held a retried record made `make demo` five times slower. Measured, not guessed:
    the budget only follows how long the checks take."""

    def __init__(self, share: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._skipped = 0  # duplicates not compared since the last warning
        self._warned_at: float | None = None

    def allows(self, duplicates: int) -> bool:
        with self._lock:
            now = self._clock()
            if now >= self._next_at:
                return True
            self._skipped += duplicates
            if self._warned_at is None or now - self._warned_at >= _WARN_EVERY_SECONDS:
                self._warned_at = now
                log.warning(
                    "conflict check skipped for %d duplicates: comparing them would take over "
                    "%.0f%% of the writers' time on this server; --on-conflict dead-letter "
                    "checks every one, ignore none",
                    self._skipped, self.share * 100,
                )  # fmt: skip
                self._skipped = 0
            return False

    def spent(self, seconds: float) -> None:
        with self._lock:
            self._next_at = max(self._next_at, self._clock() + seconds * (1 / self.share - 1))


_WARN_EVERY_SECONDS = 60.0


def mark_conflicts(
    collection: Collection[Document],
    records: Sequence[Record],
    outcomes: list[Outcome],
    budget: CheckBudget | None = None,
) -> None:
    """Insert-once: turns the duplicates whose stored content differs into conflicts.
    Within `budget` when given: over it, duplicates stay plain duplicates."""
    duplicates = [i for i, o in enumerate(outcomes) if o.kind is OutcomeKind.DUPLICATE]
    if not duplicates or (budget is not None and not budget.allows(len(duplicates))):
        return
    started = time.monotonic()
    try:
        _mark(collection, records, outcomes, duplicates)
    finally:
        if budget is not None:
            budget.spent(time.monotonic() - started)


def _mark(
    collection: Collection[Document],
    records: Sequence[Record],
    outcomes: list[Outcome],
    duplicates: list[int],
) -> None:
    try:
        stored = _stored(
            collection.with_options(codec_options=_RAW), [records[i] for i in duplicates]
        )
    except PyMongoError as exc:  # they are durable: only the check is lost
        log.warning("could not compare %d duplicates with the stored documents: %s",
                    len(duplicates), _short(exc))  # fmt: skip
        return
    for index in duplicates:
        found = stored.get(id_key(record_id(records[index])))
        if found is not None:
            outcomes[index] = duplicate_or_conflict(records[index], found)


def _stored(
    collection: Collection[Any],
    records: Sequence[Record],
    projection: Mapping[str, Any] | None = None,
) -> dict[Any, Mapping[str, Any]]:
    """The stored documents of these records' _ids, by id_key: a find by _id each, which
    both servers answer from their index (FerretDB 1.24 scans the collection for $in)."""
    stored: dict[Any, Mapping[str, Any]] = {}
    for record in records:
        found = collection.find_one({"_id": record_id(record)}, projection)
        if found is not None:
            stored[id_key(found["_id"])] = found
    return stored


def _short(exc: PyMongoError) -> str:
    return str(exc).splitlines()[0][:200]
