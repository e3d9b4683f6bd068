"""Whole message bodies in either format: the version and encoding from the attributes,
the records inside, and single-record messages (what a dead letter holds)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import bson
from bson import json_util
from bson.errors import BSONError

from . import bsonrecords
from .attributes import (
    BSON_RECORDS,
    ENCODING_ATTRIBUTE,
    FORMAT_ATTRIBUTE,
    FORMATS,
    JSON_LINES,
    Attributes,
    attribute_value,
    message_attributes,
)
from .compression import DEFAULT_MAX_DECODED_BYTES, IDENTITY, compress, decompress
from .errors import WireError
from .jsonlines import encode_operation, encode_record, iter_records
from .pointers import SIZE_ATTRIBUTE, is_pointer, parse_pointer
from .records import BadRecord, Record


def compress_body(text: str, encoding: str, level: int | None = None) -> str:
    """A format-1 (JSON Lines) body in `encoding` (identity: the text itself)."""
    if encoding == IDENTITY:
        return text
    return compress(text.encode("utf-8"), encoding, level)


def bson_body(raw: bytes, encoding: str, level: int | None = None) -> str:
    """A format-2 body in `encoding`: always base64 (an SQS body is text)."""
    if encoding == IDENTITY:
        return base64.b64encode(raw).decode("ascii")
    return compress(raw, encoding, level)


def format_of(attributes: Mapping[str, Any] | None) -> str:
    version = attribute_value(attributes, FORMAT_ATTRIBUTE)
    if version is None:
        return JSON_LINES
    if version not in FORMATS:
        raise WireError(
            f"unknown format version {version[:40]!r} (this consumer reads '1' and '2')"
        )
    return version


def decode_body(
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> str:
    """A format-1 body as JSON Lines text. Raises WireError when it is unreadable."""
    encoding = attribute_value(attributes, ENCODING_ATTRIBUTE) or IDENTITY
    if encoding == IDENTITY:
        if len(body) > max_decoded_bytes:
            raise WireError(f"body is larger than {max_decoded_bytes} bytes")
        return body
    raw = decompress(body, encoding, max_decoded_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"decompressed body is not valid UTF-8: {exc}") from exc


def _bson_bytes(body: str, encoding: str, max_decoded_bytes: int) -> bytes:
    if encoding != IDENTITY:
        return decompress(body, encoding, max_decoded_bytes)
    if len(body) * 3 // 4 > max_decoded_bytes:
        raise WireError(f"body is larger than {max_decoded_bytes} bytes")
    try:
        return base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise WireError(f"format 2 body is not valid base64: {exc}") from exc


def decode_message(
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    sent_at: float | None = None,
) -> list[Record | BadRecord]:
    """Decode a whole message, either format (`sent_at`: when SQS took it, noted on each
    Record). Raises WireError if nothing in it is readable."""
    if format_of(attributes) == BSON_RECORDS:
        encoding = attribute_value(attributes, ENCODING_ATTRIBUTE) or IDENTITY
        return bsonrecords.unpack(_bson_bytes(body, encoding, max_decoded_bytes), sent_at)
    text = decode_body(body, attributes, max_decoded_bytes=max_decoded_bytes)
    items = list(iter_records(text, sent_at))
    if not items:
        raise WireError("message holds no records")
    return items


def record_message(item: Record | BadRecord) -> tuple[str, Attributes]:
    """One record as a message of its own, in its format: a dead letter that a redrive
    sends back as it came."""
    if isinstance(item.source, str):
        return item.source, message_attributes(IDENTITY, 1, JSON_LINES)
    collection = item.collection or "?"
    trace = item.trace if isinstance(item, Record) else None
    raw = bsonrecords.pack([(collection, item.source, trace)], [is_operation(item)])
    return bson_body(raw, IDENTITY), message_attributes(IDENTITY, 1, BSON_RECORDS)


def readable(body: str, attributes: Mapping[str, Any] | None) -> str:
    """A body as a person reads it: format 1 as it is, format 2 as Extended JSON lines,
    a pointer as where its payload is."""
    try:
        if is_pointer(attributes):
            size = attribute_value(attributes, SIZE_ATTRIBUTE) or "?"
            return f"(payload in {parse_pointer(body).url}, {size} bytes)"
        if format_of(attributes) != BSON_RECORDS:
            return body
        lines = []
        for item in decode_message(body, attributes):
            if isinstance(item, Record):
                lines.append(json_line(item))
            elif item.source:
                lines.append(f"record {item.number} ({item.reason}): {_as_json(item.source)}")
            else:
                lines.append(item.reason)
        return "\n".join(lines)
    except WireError as exc:
        return f"(unreadable: {exc}) {body[:200]}"


def _as_json(source: str | bytes) -> str:
    if isinstance(source, str):
        return source
    try:
        return json_util.dumps(bson.decode(source))
    except Exception:  # not valid BSON: show its bytes
        return source[:200].hex()


def record_id(record: Record) -> Any:
    """The record's `_id`, without decoding a BSON document when `_id` comes first."""
    if isinstance(record.source, bytes):
        found = bsonrecords.record_id(record.source)
        if found is not None:
            return found
    return record.document["_id"]


def is_operation(item: Record | BadRecord) -> bool:
    """Was it sent as an update or a delete (rather than a document to insert)?"""
    if isinstance(item, Record):
        return item.operation is not None
    return item.operation


def json_line(item: Record | BadRecord) -> str:
    """A record as one line of Extended JSON (for logs, callbacks and files people read);
    bytes that are not valid BSON are shown as hex."""
    if isinstance(item.source, str):
        return item.source
    encode = encode_operation if is_operation(item) else encode_record
    try:
        return encode(item.collection or "?", bson.decode(item.source))
    except (BSONError, ValueError, WireError):
        return f"(not valid BSON) {item.source[:200].hex()}"
