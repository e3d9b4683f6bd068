"""The write modes as MongoDB statements, one per record, keyed on _id.

A statement is either an insert or an upsert by a filter on _id, and can go to the
server in a bulk or on its own: the sink falls back to statements of their own when a
bulk's reply cannot be read (mongo_bulk.py)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.collection import Collection

from ingest.sinks.base import WriteMode
from ingest.sinks.versions import guard
from producer.wire import Record, record_id

Document = dict[str, Any]


class Kind(enum.Enum):
    INSERT = "insert"
    REPLACE = "replace"  # upsert of the whole document
    UPDATE = "update"  # upsert of an update document ($set, an operation's operators)
    DELETE = "delete"  # an operation's delete, by its filter


@dataclass(frozen=True, slots=True)
class Statement:
    """One record's write. `guarded`: the filter also asks for a lower stored version,
    so a duplicate-key error means the stored document did not match it."""

    kind: Kind
    id: Any
    document: Any  # insert: the document; replace: the replacement; update: the update
    filter: Mapping[str, Any] | None = None
    guarded: bool = False

    def op(self) -> Any:
        if self.kind is Kind.INSERT:
            return InsertOne(self.document)
        if self.kind is Kind.REPLACE:
            return ReplaceOne(self.filter or {"_id": self.id}, self.document, upsert=True)
        if self.kind is Kind.DELETE:
            return DeleteOne(self.filter or {"_id": self.id})
        return UpdateOne(self.filter or {"_id": self.id}, self.document, upsert=True)

    def apply(self, collection: Collection[Document]) -> int:
        """On its own: the server's answer is about this statement alone. Returns the
        documents it deleted."""
        if self.kind is Kind.INSERT:
            collection.insert_one(self.document)
        elif self.kind is Kind.REPLACE:
            collection.replace_one(self.filter or {"_id": self.id}, self.document, upsert=True)
        elif self.kind is Kind.DELETE:
            return collection.delete_one(self.filter or {"_id": self.id}).deleted_count
        else:
            collection.update_one(self.filter or {"_id": self.id}, self.document, upsert=True)
        return 0

    def written_fields(self) -> Mapping[str, Any] | None:
        """The fields this statement sets, as far as a unique index can see them: the
        whole document, or a $set's fields (None: the fields left as stored matter too)."""
        if self.kind is Kind.DELETE:
            return None
        if self.kind is not Kind.UPDATE:
            return self.document if isinstance(self.document, Mapping) else None
        fields = self.document.get("$set")
        return fields if isinstance(fields, Mapping) else None


def _driver_document(record: Record) -> Document | RawBSONDocument:
    """What the driver takes: a BSON document (format 2) goes as its bytes."""
    document = record.document
    if isinstance(document, dict | RawBSONDocument):
        return document
    return dict(document)


def insert(record: Record) -> Statement:
    return Statement(Kind.INSERT, record_id(record), _driver_document(record))


def replace(record: Record) -> Statement:
    return Statement(Kind.REPLACE, record_id(record), _driver_document(record))


def merge(record: Record) -> Statement:
    return Statement(Kind.UPDATE, record_id(record), _merge_update(record))


def _merge_update(record: Record) -> dict[str, Any]:
    fields = {k: v for k, v in record.document.items() if k != "_id"}
    return {"$set": fields} if fields else {"$setOnInsert": {}}


def guarded(mode: WriteMode, record: Record, field: str) -> Statement:
    """A replace or merge upsert that applies only over a lower stored version."""
    _id = record_id(record)
    where = {"_id": _id, **guard(field, record.document[field])}
    if mode is WriteMode.REPLACE:
        return Statement(Kind.REPLACE, _id, _driver_document(record), where, guarded=True)
    return Statement(Kind.UPDATE, _id, _merge_update(record), where, guarded=True)


def in_order(mode: WriteMode, record: Record) -> Statement:
    """One record in a group that must apply in order (FIFO): upserts for replace and
    merge, so that each statement stands alone."""
    if mode is WriteMode.REPLACE:
        return replace(record)
    if mode is WriteMode.MERGE:
        return merge(record)
    return insert(record)
