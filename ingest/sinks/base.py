"""The sink seam: where documents go, and what every write answers.

A sink answers every record with a typed outcome (written, duplicate, rejected with
a reason, retry later). When the store does not answer at all it raises
SinkUnavailable instead: "retry everything" is not the same as "this record is bad".
Two implementations keep the same contract (tests/contract/test_sink_contract.py):
`MongoSink` and `MemorySink`. Outcomes are compared by kind."""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from producer.wire import Record


class WriteMode(enum.StrEnum):
    INSERT_ONCE = "insert-once"  # first write of an _id wins; duplicates collapse
    REPLACE = "replace"  # last write wins
    MERGE = "merge"  # $set of the record's fields, upserting


class ConflictPolicy(enum.StrEnum):
    """What insert-once does with a duplicate _id whose content differs from the stored one."""

    IGNORE = "ignore"  # no check: a duplicate is a duplicate
    COUNT = "count"  # counted and logged; the first write stays
    DEAD_LETTER = "dead-letter"  # counted, logged and dead-lettered with both hashes


class OutcomeKind(enum.Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"  # an earlier write of the same _id won; nothing to do
    REJECTED = "rejected"  # permanent: dead-letter this record with the reason
    RETRY = "retry"  # failed, may pass later: an attempt, tried again within the bound
    BLOCKED = "blocked"  # ordered: not tried, an earlier record of its group must go first
    STALE = "stale"  # version-guarded: a higher version of this _id is stored; not written
    CONFLICT = "conflict"  # insert-once: a different document with this _id is stored


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""

    @property
    def settled(self) -> bool:
        """True when the record needs no further write."""
        return self.kind not in (OutcomeKind.RETRY, OutcomeKind.BLOCKED)


WRITTEN = Outcome(OutcomeKind.WRITTEN)
DUPLICATE = Outcome(OutcomeKind.DUPLICATE)
STALE = Outcome(OutcomeKind.STALE)


def rejected(reason: str) -> Outcome:
    return Outcome(OutcomeKind.REJECTED, reason)


def retry(reason: str) -> Outcome:
    return Outcome(OutcomeKind.RETRY, reason)


#: Ordered writes: what follows a record that must be tried again is not applied before it.
AFTER_FAILURE = Outcome(
    OutcomeKind.BLOCKED, "not applied: an earlier record of its group must be written first"
)


def conflict(reason: str) -> Outcome:
    return Outcome(OutcomeKind.CONFLICT, reason)


@dataclass(frozen=True, slots=True)
class Retention:
    """Documents expire `seconds` after the date in `field` (a TTL index)."""

    field: str
    seconds: int


class DocumentSink(Protocol):
    """What the write stage needs."""

    def write(self, records: Sequence[Record]) -> list[Outcome]:
        """One outcome per record, in order. Raises SinkUnavailable for the whole batch."""
        ...

    def write_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        """Applies records strictly in order (FIFO groups). A record to retry stops
        the ones after it, which come back as RETRY without having been applied."""
        ...

    def ping(self) -> None:
        """Raises SinkUnavailable when the store does not answer."""
        ...


@runtime_checkable
class TombstoneKeeper(Protocol):
    """A sink whose deletes leave tombstones (ingest/sinks/operations.py)."""

    def sweep_tombstones(self, period_seconds: float) -> int:
        """Tombstones older than the period expire (a TTL index where the store keeps
        one); returns how many were deleted now. Raises SinkUnavailable."""
        ...


class DocumentStore(DocumentSink, Protocol):
    """What the operator tools need beyond writing."""

    @property
    def database(self) -> str: ...

    def collection_counts(self) -> dict[str, int]:
        """Documents per collection (the consumer's own collections left out)."""
        ...

    def prepare(self, collections: Sequence[str]) -> list[str]:
        """Creates the named collections; returns every collection there is but the
        pipeline's own (INTERNAL_PREFIX). Idempotent."""
        ...

    def check_write(self) -> None:
        """Raises SinkUnavailable unless a test write to the database succeeds."""
        ...

    def expire(self, collections: Sequence[str], retention: Retention) -> None:
        """Documents of these collections are deleted once their `retention.field` is
        older than `retention.seconds` (a TTL index on MongoDB). Idempotent; another
        period replaces the old one. Raises SinkRefused when the store cannot expire
        documents, SinkUnavailable when it does not answer."""
        ...

    def retention(self, collection: str) -> Retention | None:
        """The collection's expiry, if it has one."""
        ...

    def replica_board(self) -> ReplicaBoard: ...


class ReplicaBoard(Protocol):
    """Where consumer replicas check in to share the write ceiling. Times are the
    store's own clock, so replicas on hosts with skewed clocks still agree."""

    def check_in(self, replica: str, status: Mapping[str, Any]) -> None: ...

    def live(self, within_seconds: float) -> list[dict[str, Any]]:
        """The replicas seen within the last `within_seconds`, by the store's clock."""
        ...

    def leave(self, replica: str) -> None: ...


#: The consumer's own collections (replicas, `ingest check`) start with this.
INTERNAL_PREFIX = "_ingest_"
REPLICAS_COLLECTION = INTERNAL_PREFIX + "replicas"


def group_by_collection(records: Sequence[Record]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[record.collection].append(index)
    return groups
