"""What a duplicate-key error (E11000) means, by evidence.

A duplicate-key error is a redelivery only when the same _id is stored; otherwise the
record clashes with another document on a unique secondary index, and must be
dead-lettered with a reason that names the index (a user's unique email, say), never
dropped as a duplicate. The evidence, in this order:

1. the server's own `keyPattern` (MongoDB gives it; its `keyValue` and index name go in
   the reason);
2. for upserts, another document holding this record's values of a unique index (the
   collection's unique indexes are read once a minute, and only when needed): FerretDB
   names no index, so this is how its clashes are named;
3. a read of the record's _id;
4. for inserts, the unique indexes as in 2.

A find by _id, and a find by a unique index's fields, use an index on both servers
(FerretDB 1.24 scans a collection for a find with $in, so each _id is read alone)."""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bson import json_util
from pymongo.collection import Collection

from ingest.sinks.base import Outcome, rejected
from ingest.sinks.modes import Document, Kind, Statement

INDEX_CACHE_SECONDS: Final = 60.0
_INDEX_NAME: Final = re.compile(r"index: (\S+)")


class Clash(enum.Enum):
    SAME_ID = "same _id"  # the record's _id is stored: a redelivery, or a concurrent write
    OTHER_INDEX = "another unique index"  # refused: dead-letter with the reason
    UNEXPLAINED = "unexplained"  # neither could be found: the server's own reason


@dataclass(frozen=True, slots=True)
class Finding:
    clash: Clash
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UniqueIndex:
    name: str
    fields: tuple[str, ...]
    partial: Mapping[str, Any] | None
    collation: Mapping[str, Any] | None


class UniqueIndexes:
    """The unique indexes of each collection other than _id's, cached for a minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[UniqueIndex]]] = {}

    def of(self, collection: Collection[Document]) -> list[UniqueIndex]:
        with self._lock:
            found = self._cache.get(collection.full_name)
            if found is not None and self._clock() < found[0]:
                return found[1]
        indexes = [
            UniqueIndex(
                str(spec["name"]),
                tuple(spec["key"]),
                spec.get("partialFilterExpression"),
                spec.get("collation"),
            )
            for spec in collection.list_indexes()
            if spec.get("unique") and list(spec["key"]) != ["_id"]
        ]
        with self._lock:
            self._cache[collection.full_name] = (self._clock() + INDEX_CACHE_SECONDS, indexes)
        return indexes


def explain(
    collection: Collection[Document],
    statement: Statement,
    error: Mapping[str, Any],
    indexes: UniqueIndexes,
) -> Finding:
    """Why `statement` got a duplicate-key error (`error`: its writeError or reply)."""
    pattern = error.get("keyPattern")
    if isinstance(pattern, Mapping) and pattern:
        if list(pattern) == ["_id"]:
            return Finding(Clash.SAME_ID)
        return Finding(Clash.OTHER_INDEX, _server_clash(collection, pattern, error))
    if statement.kind is not Kind.INSERT and (
        found := _other_holder(collection, statement, indexes)
    ):
        return found
    if collection.find_one({"_id": statement.id}, {"_id": 1}) is not None:
        return Finding(Clash.SAME_ID)
    if statement.kind is Kind.INSERT and (found := _other_holder(collection, statement, indexes)):
        return found
    if not indexes.of(collection):
        # _id is the only unique key: it was stored, and a concurrent delete removed it.
        return Finding(Clash.SAME_ID)
    return Finding(Clash.UNEXPLAINED, _unexplained(collection, error))


def outcome_of(finding: Finding, same_id: Outcome) -> Outcome:
    """A clash with another document is the record's: it is refused with the reason."""
    return same_id if finding.clash is Clash.SAME_ID else rejected(finding.reason)


def _other_holder(
    collection: Collection[Document], statement: Statement, indexes: UniqueIndexes
) -> Finding | None:
    fields = statement.written_fields()
    if fields is None:
        return None
    for index in indexes.of(collection):
        values = _values(fields, index.fields, whole=statement.kind is not Kind.UPDATE)
        if values is None:
            continue
        query: dict[str, Any] = {**values, "_id": {"$ne": statement.id}}
        if index.partial:
            query = {"$and": [query, dict(index.partial)]}
        options = {"collation": index.collation} if index.collation else {}
        if collection.find_one(query, {"_id": 1}, **options) is not None:
            return Finding(Clash.OTHER_INDEX, _clash_reason(collection.name, values, index.name))
    return None


def _values(
    document: Mapping[str, Any], fields: Sequence[str], *, whole: bool
) -> dict[str, Any] | None:
    """The document's values of an index's fields (a missing one is null to a unique
    index); None when a $set leaves one of them as stored (it cannot be told here)."""
    values: dict[str, Any] = {}
    for field in fields:
        value: Any = document
        for part in field.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
            if value is None:
                break
        if value is None and not whole:
            return None
        values[field] = value
    return values


def _clash_reason(collection: str, values: Mapping[str, Any], index: str) -> str:
    shown = json_util.dumps(dict(values))
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return (
        f"duplicate key: another document in {collection} already has {shown}"
        f" (unique index {index}); this record was not written"
    )


def _server_clash(
    collection: Collection[Document], pattern: Mapping[str, Any], error: Mapping[str, Any]
) -> str:
    match = _INDEX_NAME.search(str(error.get("errmsg", "")))
    name = match.group(1) if match else "on " + ", ".join(pattern)
    value = error.get("keyValue")
    values = dict(value) if isinstance(value, Mapping) else dict.fromkeys(pattern, "?")
    return _clash_reason(collection.name, values, name)


def _unexplained(collection: Collection[Document], error: Mapping[str, Any]) -> str:
    message = str(error.get("errmsg") or "E11000 duplicate key error").splitlines()[0][:200]
    return (
        f"duplicate key: refused by the database (error 11000): {message}; no document in"
        f" {collection.name} has this _id, so a unique index other than _id refused it"
    )
