"""The write modes as MongoDB operations, one per record, keyed on _id."""

from __future__ import annotations

from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import InsertOne, ReplaceOne, UpdateOne

from ingest.sinks.base import WriteMode
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
    fields = {k: v for k, v in record.document.items() if k != "_id"}
    update = {"$set": fields} if fields else {"$setOnInsert": {}}
    return UpdateOne({"_id": record_id(record)}, update, upsert=True)


def ordered_op(mode: WriteMode, record: Record) -> Any:
    """One record in a group that must apply in order (FIFO): upserts for replace and
    merge, so that each op stands alone."""
    if mode is WriteMode.REPLACE:
        return replace_op(record)
    if mode is WriteMode.MERGE:
        return merge_op(record)
    return insert_op(record)
