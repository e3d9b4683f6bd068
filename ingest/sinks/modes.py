"""The write modes as MongoDB operations, one per record, keyed on _id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.collection import Collection

from ingest.sinks.base import WriteMode
from ingest.sinks.versions import guard
from producer.wire import Record, record_id

Document = dict[str, Any]


def _driver_document(record: Record) -> Document | RawBSONDocument:
    """What the driver takes: a BSON document (format 2) goes as its bytes."""
    document = record.document
    if isinstance(document, dict | RawBSONDocument):
        return document
    return dict(document)


def insert_op(record: Record) -> InsertOne[Any]:
    return InsertOne(_driver_document(record))


def replace_op(record: Record) -> ReplaceOne[Any]:
    return ReplaceOne({"_id": record_id(record)}, _driver_document(record), upsert=True)


def merge_op(record: Record) -> UpdateOne:
    return UpdateOne({"_id": record_id(record)}, _merge_update(record), upsert=True)


def _merge_update(record: Record) -> dict[str, Any]:
    fields = {k: v for k, v in record.document.items() if k != "_id"}
    return {"$set": fields} if fields else {"$setOnInsert": {}}


@dataclass(frozen=True, slots=True)
class GuardedWrite:
    """A replace or merge upsert that applies only over a lower stored version."""

    filter: dict[str, Any]
    update: Any  # the replacement document, or the $set update
    replace: bool

    def op(self) -> ReplaceOne[Document] | UpdateOne:
        if self.replace:
            return ReplaceOne(self.filter, self.update, upsert=True)
        return UpdateOne(self.filter, self.update, upsert=True)

    def apply(self, collection: Collection[Document]) -> None:
        """One statement on its own (FerretDB cannot answer a bulk of these: mongo.py)."""
        if self.replace:
            collection.replace_one(self.filter, self.update, upsert=True)
        else:
            collection.update_one(self.filter, self.update, upsert=True)


def guarded_write(mode: WriteMode, record: Record, field: str) -> GuardedWrite:
    doc = record.document
    where = {"_id": record_id(record), **guard(field, doc[field])}
    if mode is WriteMode.REPLACE:
        return GuardedWrite(where, _driver_document(record), replace=True)
    return GuardedWrite(where, _merge_update(record), replace=False)


def ordered_op(mode: WriteMode, record: Record) -> Any:
    """One record in a group that must apply in order (FIFO): upserts for replace and
    merge, so that each op stands alone."""
    if mode is WriteMode.REPLACE:
        return replace_op(record)
    if mode is WriteMode.MERGE:
        return merge_op(record)
    return insert_op(record)
