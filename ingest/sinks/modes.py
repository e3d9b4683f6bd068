"""The write modes as MongoDB operations, one per record, keyed on _id."""

from __future__ import annotations

from typing import Any

from pymongo import InsertOne, ReplaceOne, UpdateOne

from ingest.sinks.base import WriteMode
from producer.wire import Record

Document = dict[str, Any]


def insert_op(record: Record) -> InsertOne[Document]:
    return InsertOne(record.document)


def replace_op(record: Record) -> ReplaceOne[Document]:
    return ReplaceOne({"_id": record.document["_id"]}, record.document, upsert=True)


def merge_op(record: Record) -> UpdateOne:
    doc = record.document
    fields = {k: v for k, v in doc.items() if k != "_id"}
    update = {"$set": fields} if fields else {"$setOnInsert": {}}
    return UpdateOne({"_id": doc["_id"]}, update, upsert=True)


def ordered_op(mode: WriteMode, record: Record) -> Any:
    """One record in a group that must apply in order (FIFO): upserts for replace and
    merge, so that each op stands alone."""
    if mode is WriteMode.REPLACE:
        return replace_op(record)
    if mode is WriteMode.MERGE:
        return merge_op(record)
    return insert_op(record)
