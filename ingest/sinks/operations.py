"""What updates and deletes mean, the same in both sinks (docs/operations.md,
"Updates and deletes").

- **Once.** An update not ordered by a version (counters: $inc and its kind) applies only
  if its id is not among the ids the document applied last: the sink keeps the most
  recent ones in the document (META_FIELD.ops, trimmed to `recent` ids), and the
  filter of the update excludes a document that holds it. Past that bound a
  redelivered update applies again: the bound is chosen from the redelivery window.
- **In order.** An ordered update or a delete applies only over a lower stored version
  (--version-field, else META_FIELD.v), as replace and merge do with --version-field:
  equal is a redelivery, lower is stale, another kind is refused.
- **Deletes leave a tombstone** (its version, and the server's time) in a companion
  collection, `_ingest_tombstones.<collection>`, so that a plain find never sees it.
  While it lives, a write that would bring the document back applies only if its
  version is higher; a write without a version (an insert, an unordered update) never
  does. It is written before the document is deleted, and every write checks for one
  after it has written: whatever order two writers take, the older write does not stay.
- **Order inside one batch**: records of one _id are written in rounds, first
  occurrences first, so a batch applies them in the order they came."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bson.errors import BSONError
from bson.objectid import ObjectId

from ingest.sinks.base import (
    DUPLICATE,
    INTERNAL_PREFIX,
    STALE,
    Outcome,
    rejected,
    retry,
)
from ingest.sinks.documents import id_key, type_name
from ingest.sinks.versions import Version, VersionKind, as_version
from producer.wire import DELETE, META_FIELD, Operation, Record, record_id, updated_paths

OPS_FIELD: Final = META_FIELD + ".ops"
DEFAULT_VERSION_FIELD: Final = META_FIELD + ".v"
TOMBSTONES_PREFIX: Final = INTERNAL_PREFIX + "tombstones."
#: Operation ids a document keeps (--recent-operations): see docs/operations.md.
DEFAULT_RECENT: Final = 1000
#: Tombstones live this long by default (--tombstone-seconds): SQS's longest retention,
#: so no write still waiting in a queue is older than every tombstone it could meet.
DEFAULT_TOMBSTONE_SECONDS: Final = 14 * 86400

CONCURRENT: Final = retry("a concurrent write of this _id got in the way")
GONE: Final = retry("the stored document of this _id went away during the write")


def version_path(version_field: str | None) -> str:
    """Where ordered operations keep their version: the configured field, else ours."""
    return version_field or DEFAULT_VERSION_FIELD


def tombstones_of(collection: str) -> str:
    return TOMBSTONES_PREFIX + collection


def op_version(value: Any) -> Version | None:
    """Operations order by numbers, dates, and ObjectIds (their default version)."""
    if isinstance(value, ObjectId):
        return Version(VersionKind.OBJECT_ID, int.from_bytes(value.binary, "big"))
    return as_version(value)


def compare(incoming: Any, stored: Any) -> int | None:
    """-1, 0 or 1 as `incoming` is lower, equal or higher; None across kinds (MongoDB's
    $lt never compares them, so neither write can pass the other)."""
    mine, theirs = op_version(incoming), op_version(stored)
    if mine is None or theirs is None or mine.kind is not theirs.kind:
        return None
    return (mine.value > theirs.value) - (mine.value < theirs.value)


def lookup(document: Mapping[str, Any] | None, path: str) -> Any:
    """The value at a dotted path, or None."""
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def consumer_problem(operation: Operation, version_field: str | None) -> str | None:
    """What this consumer refuses before writing: an update that writes the version
    field, which ordered operations keep."""
    if operation.update is None or version_field is None:
        return None
    for path in updated_paths(operation.update):
        if path == version_field or path.startswith(version_field + "."):
            return (
                f"the update writes {version_field}, the version field (--version-field):"
                " give the version as version= instead"
            )
    return None


def judge_update(operation: Operation, stored: Mapping[str, Any] | None, path: str) -> Outcome:
    """Why the stored document refused an update (its filter did not match)."""
    if stored is None:
        return GONE
    if not operation.ordered:
        applied = lookup(stored, OPS_FIELD)
        return DUPLICATE if isinstance(applied, list) and operation.id in applied else CONCURRENT
    return against(operation.version, lookup(stored, path), path) or CONCURRENT


def against(version: Any, stored: Any, path: str) -> Outcome | None:
    """A version against a stored one: None when it is higher (it may be written)."""
    if stored is None:
        return None
    order = compare(version, stored)
    if order is None:
        return rejected(
            f"version {path} is {_kind(version)}, but the stored one is {_kind(stored)}:"
            " versions of one _id must all be numbers, all dates or all ObjectIds"
        )
    if order > 0:
        return None
    return DUPLICATE if order == 0 else STALE


def judge_tombstone(operation: Operation, tombstone: Mapping[str, Any] | None) -> Outcome | None:
    """Why a delete's tombstone was refused; None: it stands (this very delete wrote it
    before, so the document must still go)."""
    if tombstone is None:
        return GONE
    if tombstone.get("op") == operation.id:
        return None
    return against(operation.version, tombstone.get("v"), "of the tombstone") or CONCURRENT


def write_version(record: Record, version_field: str | None) -> Any:
    """The version a write brings against a tombstone: an ordered operation's, an
    insert's --version-field; None for writes without one (they never pass it)."""
    operation = record.operation
    if operation is not None:
        return operation.version if operation.kind != DELETE else None
    if version_field is None:
        return None
    return record.document.get(version_field)


def outlives(version: Any, tombstone: Mapping[str, Any]) -> bool:
    """Does a write with this version stand over the tombstone (a newer write)?"""
    return version is not None and compare(version, tombstone.get("v")) == 1


def stands_over(record: Record, version_field: str | None, tombstone: Mapping[str, Any]) -> bool:
    """Does this write stand over the tombstone? One with a version, when it is higher.
    One without (a plain send()), when SQS took it after the delete was applied: such
    writes are ordered by arrival, so a document sent again after its delete comes
    back, while a late redelivery of one sent before the delete does not."""
    version = write_version(record, version_field)
    if version is not None or record.operation is not None:
        return outlives(version, tombstone)
    deleted_at = _epoch(tombstone.get("at"))
    return record.sent_at is not None and deleted_at is not None and record.sent_at > deleted_at


def _epoch(at: Any) -> float | None:
    """A tombstone's `at`: the server's date (naive UTC), or a float (the memory twin's)."""
    if isinstance(at, datetime.datetime):
        return (at if at.tzinfo else at.replace(tzinfo=datetime.UTC)).timestamp()
    return float(at) if isinstance(at, int | float) else None


def rounds(records: Sequence[Record]) -> list[list[int]]:
    """Indexes in rounds: each _id at most once a round, in the order they came."""
    seen: dict[Any, int] = {}
    found: list[list[int]] = []
    for index, record in enumerate(records):
        try:
            key = id_key(record_id(record))
        except (BSONError, KeyError):  # bytes the server will refuse: a round of its own
            key = ("unreadable", index)
        turn = seen.get(key, 0)
        seen[key] = turn + 1
        if turn == len(found):
            found.append([])
        found[turn].append(index)
    return found


def is_delete(record: Record) -> bool:
    return record.operation is not None and record.operation.kind == DELETE


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _kind(value: Any) -> str:
    version = op_version(value)
    return version.kind.value if version is not None else type_name(value)
