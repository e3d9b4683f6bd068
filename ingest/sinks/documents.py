"""Reading stored and incoming documents the same way in both sinks: a hashable key
for any _id, a document's content as canonical BSON and its hash, and the names of
BSON types as a sender knows them (for reasons)."""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Mapping
from typing import Any

import bson
from bson import Binary, Decimal128, ObjectId, json_util
from bson.raw_bson import RawBSONDocument

from ingest.sinks.base import DUPLICATE, Outcome, conflict
from producer.wire import Record


def id_key(value: Any) -> Any:
    """A dictionary key for an _id: ObjectIds, strings and numbers are their own keys;
    documents and lists are not hashable and become their Extended JSON."""
    plain = isinstance(value, ObjectId | str | int | float) and not isinstance(value, bool)
    return value if plain else json_util.dumps(value)


def canonical_bson(document: Mapping[str, Any]) -> bytes:
    """The document as MongoDB stores it: BSON with _id first (the server moves it there)."""
    if isinstance(document, RawBSONDocument) and _starts_with_id(bytes(document.raw[:9])):
        return bytes(document.raw)
    if next(iter(document), None) == "_id":
        return bson.encode(document)
    return bson.encode(
        {"_id": document["_id"], **{k: v for k, v in document.items() if k != "_id"}}
    )


def _starts_with_id(raw: bytes) -> bool:
    return raw[5:9] == b"_id\x00"


def content_hash(document: Mapping[str, Any]) -> str:
    """A short hash of the canonical BSON: equal for a redelivery, different for new content."""
    return hashlib.sha256(canonical_bson(document)).hexdigest()[:16]


def type_name(value: Any) -> str:
    """A value's BSON type in words, for a reason the sender reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    names: list[tuple[type | tuple[type, ...], str]] = [
        (str, "a string"),
        ((int, float), "a number"),
        (datetime.datetime, "a date"),
        (Decimal128, "a Decimal128"),
        (ObjectId, "an ObjectId"),
        ((bytes, Binary), "binary data"),
        (Mapping, "an object"),
        (list, "an array"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return f"a BSON {type(value).__name__}"


def duplicate_or_conflict(record: Record, stored: Mapping[str, Any]) -> Outcome:
    """A record whose _id is already stored: the same content (a redelivery) or not."""
    mine, theirs = content_hash(record.document), content_hash(stored)
    if mine == theirs:
        return DUPLICATE
    return conflict(
        f"conflicting duplicate: collection {record.collection} already holds another document"
        f" with this _id (stored sha256:{theirs}, this record sha256:{mine});"
        " insert-once keeps the first"
    )


def merge_refusal(record: Record) -> str | None:
    """Merge writes fields with $set, which reads a dot in a name as a path: {"a.b": 1}
    would be stored as {"a": {"b": 1}}, a document the sender never sent (insert and
    replace store the name as it is, or the server refuses it). Refused, not reshaped."""
    if record.operation is not None:  # an update's own operators: paths are meant
        return None
    dotted = next((key for key in record.document if "." in key), None)
    if dotted is None:
        return None
    return (
        f"field {dotted[:60]!r} has a '.': the merge write mode sets fields with $set, "
        "which takes a dot for a path into a nested document; send the nested document "
        "(or use the insert or replace write mode)"
    )
