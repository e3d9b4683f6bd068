"""Format 2: BSON documents, so that neither side parses records in Python.

A body, before its encoding (identity, gzip or zstd) and base64 (docs/wire-format.md):

    body    = names record*
    names   = a BSON document {"0": name, "1": name, ...}: the collections, by index
    record  = flags:u8  collection:u16le  [trace]  document
    trace   = length:u8, then that many ASCII bytes: a W3C traceparent (when flags bit 0)
    document = one BSON document, its own int32 length first; `_id` should come first;
              with flags bit 1, an operation's envelope (operations.py), not a document

The consumer hands each document to the driver as the bytes it received (a
RawBSONDocument): no dict is built on the hot path. Its checks (an `_id` present and not
an array, no top-level `$` keys, nesting and size limits) are done on the bytes; only a
document whose bytes make a check unsure (`_id` not first, a `$` somewhere, many nested
documents) is decoded to look closer."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import bson
from bson.errors import BSONError
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from .checks import (
    MAX_BSON_DOCUMENT_BYTES,
    MAX_NESTING_DEPTH,
    bson_problem,
    check_document,
    check_keys_and_depth,
    known_collection,
)
from .errors import WireError
from .operations import read_envelope
from .records import BadRecord, Record

TRACED: Final = 0x01  # flags bit 0: a trace context follows the collection index
# Flags bit 1: the document is an operation (an update or a delete), not one to insert.
# A consumer that predates operations refuses the bit as unknown: never misapplies it.
OPERATION: Final = 0x02
_KNOWN_FLAGS: Final = TRACED | OPERATION
_ID_FIRST: Final = b"_id\x00"  # the key of the first element, when it is _id
_ARRAY, _DOCUMENT, _OBJECT_ID, _STRING = 0x04, 0x03, 0x07, 0x02
_INT32 = struct.Struct("<i")
# BSON's element type bytes: a key starting with '$' follows one.
_TYPE_BYTE: Final = tuple(b in {*range(0x01, 0x14), 0x7F, 0xFF} for b in range(256))


# ------------------------------------------------------------------ encoding


def encode_document(document: Mapping[str, Any]) -> bytes:
    """One document as BSON, `_id` first, with the checks the consumer makes.
    Raises WireError with the reason."""
    if isinstance(document, RawBSONDocument):
        raw = bytes(document.raw)
        problem = raw_problem(raw)
    else:
        try:
            raw = bson.encode(document)  # the C encoder puts _id first at the top level
        except (BSONError, OverflowError, ValueError, TypeError) as exc:
            check_document(document)  # its reasons first: _id, the keys
            raise WireError(bson_problem(exc, document)) from exc
        if not _plainly_valid(raw, document):
            check_document(document)  # _id and the top-level keys, on the dict itself
        problem = _size_or_depth_problem(raw, document)
    if problem:
        raise WireError(problem)
    return raw


def _plainly_valid(raw: bytes, document: Mapping[str, Any]) -> bool:
    """What check_document makes sure of, read off the bytes in the common case (about
    a microsecond less per send): a dict, with _id first and not an array, and no '$'
    anywhere (a '$' somewhere sends it to check_document, which looks at the keys)."""
    return (
        type(document) is dict
        and raw.startswith(_ID_FIRST, 5)
        and raw[4] != _ARRAY
        and b"$" not in raw
    )


def _size_or_depth_problem(raw: bytes, document: Mapping[str, Any]) -> str | None:
    if len(raw) > MAX_BSON_DOCUMENT_BYTES:
        return f"document is {len(raw)} bytes as BSON, over MongoDB's 16 MiB limit"
    if raw.count(_DOCUMENT) + raw.count(_ARRAY) >= MAX_NESTING_DEPTH:
        try:
            check_keys_and_depth(document)
        except WireError as exc:
            return str(exc)
    return None


def pack(
    records: Sequence[tuple[str, bytes, str | None]], operations: Sequence[bool] = ()
) -> bytes:
    """A body (before its encoding) for (collection, BSON document, trace) records;
    `operations[n]` true: record n is an operation's envelope."""
    index: dict[str, int] = {}
    parts: list[bytes] = []
    for number, (collection, document, trace) in enumerate(records):
        position = index.setdefault(collection, len(index))
        flags = OPERATION if number < len(operations) and operations[number] else 0
        if trace is None:
            parts.append(bytes((flags,)) + position.to_bytes(2, "little"))
        else:
            context = trace.encode("ascii")
            parts.append(
                bytes((flags | TRACED,))
                + position.to_bytes(2, "little")
                + bytes((len(context),))
                + context
            )
        parts.append(document)
    if len(index) > 0xFFFF:
        raise WireError("a message names at most 65535 collections")
    names = bson.encode({str(n): name for name, n in index.items()})
    return names + b"".join(parts)


def framing_bytes(collection: str, trace: str | None) -> int:
    """What a record adds to a body besides its document (its name counted once more,
    as if it were new to the message's table: an upper bound)."""
    return 3 + (1 + len(trace) if trace else 0) + len(collection.encode("utf-8")) + 8


# ------------------------------------------------------------------ decoding


def unpack(raw: bytes, sent_at: float | None = None) -> list[Record | BadRecord]:
    """The records of a decoded body (`sent_at`: see Record). Raises WireError when not
    even the collection table can be read; a record that breaks the framing ends the list."""
    names, position = _names(raw)
    items = _records(raw, position, names, _dollar_suspects(raw, position), sent_at)
    if not items:
        raise WireError("message holds no records")
    return items


def _names(raw: bytes) -> tuple[list[str], int]:
    if len(raw) < 5:
        raise WireError("format 2 body is too short for its collection table")
    (size,) = _INT32.unpack_from(raw)
    if not 5 <= size <= len(raw):
        raise WireError(
            f"collection table's length prefix says {size} bytes, the body has {len(raw)}"
        )
    try:
        table = bson.decode(raw[:size])
    except (BSONError, ValueError) as exc:
        raise WireError(f"collection table is not valid BSON: {bson_problem(exc, {})}") from exc
    names = [table.get(str(n)) for n in range(len(table))]
    if len(names) != len(table) or not all(isinstance(name, str) for name in names):
        raise WireError('collection table must be {"0": name, "1": name, ...} with string names')
    return [str(name) for name in names], size


def _checked_names(names: list[str]) -> list[str | WireError]:
    """Each name of the table checked once per message, not once per record."""
    checked: list[str | WireError] = []
    for name in names:
        try:
            checked.append(known_collection(name))
        except WireError as exc:
            checked.append(exc)
    return checked


def _dollar_suspects(raw: bytes, start: int) -> list[int]:
    """Where in the body a key could start with '$' (a '$' right after a type byte),
    found in one pass over the body rather than one per record. Binary values hold
    '$' bytes often, after a type byte rarely: a suspect only costs a closer look."""
    suspects = []
    at = raw.find(b"$", start + 1)
    while at != -1:
        if _TYPE_BYTE[raw[at - 1]]:
            suspects.append(at)
        at = raw.find(b"$", at + 1)
    return suspects


def _records(
    raw: bytes, position: int, names: list[str], suspects: list[int], sent_at: float | None
) -> list[Record | BadRecord]:
    # One loop, the common record inline: at 1 KB a record, a function call or a
    # dataclass check per record costs as much as the checks themselves.
    items: list[Record | BadRecord] = []
    checked = _checked_names(names)
    end, number, suspect = len(raw), 0, 0
    while position < end:
        number += 1
        if end - position < 3 + 5:
            items.append(_broken(number, f"{end - position} bytes left, too few for a record"))
            break
        flags, slot = raw[position], raw[position + 1] | raw[position + 2] << 8
        position += 3
        trace = None
        if flags:
            if flags & ~_KNOWN_FLAGS:
                known = f"this consumer knows {_KNOWN_FLAGS:#04x}"
                items.append(_broken(number, f"unknown flags {flags:#04x} ({known})"))
                break
            if flags & TRACED:
                length = raw[position]
                trace = raw[position + 1 : position + 1 + length].decode("ascii", "replace")
                position += 1 + length
        (size,) = _INT32.unpack_from(raw, position) if end - position >= 4 else (-1,)
        if not 5 <= size <= end - position:
            reason = f"its length prefix says {size} bytes, {end - position} remain"
            items.append(_broken(number, reason))
            break
        start, position = position, position + size
        document = raw[start:position]
        while suspect < len(suspects) and suspects[suspect] < start:
            suspect += 1
        collection = checked[slot] if slot < len(checked) else None
        if flags & OPERATION:
            items.append(_operation(number, names, checked, slot, document, trace, sent_at))
        elif (
            type(collection) is str
            and document[-1] == 0
            and document[5:9] == _ID_FIRST
            and document[4] != _ARRAY
            and (suspect == len(suspects) or suspects[suspect] >= position)
            and size <= MAX_BSON_DOCUMENT_BYTES
            and document.count(_DOCUMENT) + document.count(_ARRAY) < MAX_NESTING_DEPTH
        ):
            items.append(
                Record(collection, RawBSONDocument(document), document, trace, None, sent_at)
            )
        else:
            items.append(_record(number, names, checked, slot, document, trace, sent_at))
    return items


def _broken(number: int, reason: str) -> BadRecord:
    return BadRecord(
        number,
        f"{reason}; the records after it cannot be read",
        b"",
        rest_unreadable=True,
    )


def _record(
    number: int,
    names: list[str],
    checked: list[str | WireError],
    slot: int,
    document: bytes,
    trace: str | None,
    sent_at: float | None,
) -> Record | BadRecord:
    """A record the fast path was not sure of: why it is bad, or a closer look says good."""
    if slot >= len(names):
        reason = f"collection index {slot}, but the message names {len(names)} collections"
        return BadRecord(number, reason, document)
    collection = checked[slot]
    problem = raw_problem(document)
    if problem is None and isinstance(collection, WireError):
        problem = str(collection)
    if problem is None and isinstance(collection, str):
        try:
            return Record(collection, RawBSONDocument(document), document, trace, None, sent_at)
        except (BSONError, ValueError) as exc:
            problem = f"document is not valid BSON: {bson_problem(exc, {})}"
    return BadRecord(number, problem or "unreadable record", document, names[slot])


def _operation(
    number: int,
    names: list[str],
    checked: list[str | WireError],
    slot: int,
    document: bytes,
    trace: str | None,
    sent_at: float | None,
) -> Record | BadRecord:
    """An operation's envelope, decoded (operations are read whole, not on the bytes)."""
    collection = checked[slot] if slot < len(checked) else None
    name = names[slot] if slot < len(names) else None
    try:
        if collection is None:
            raise WireError(f"collection index {slot}, but the message names {len(names)}")
        if isinstance(collection, WireError):
            raise collection
        if len(document) > MAX_BSON_DOCUMENT_BYTES or document[-1] != 0:
            raise WireError("operation is not valid BSON or over MongoDB's 16 MiB limit")
        decoded = bson.decode(document)
        check_keys_and_depth(decoded)
        operation = read_envelope(decoded)
    except WireError as exc:
        return BadRecord(number, str(exc), document, name, operation=True)
    except (BSONError, ValueError, OverflowError) as exc:
        reason = f"operation is not valid BSON: {bson_problem(exc, {})}"
        return BadRecord(number, reason, document, name, operation=True)
    return Record(collection, RawBSONDocument(document), document, trace, operation, sent_at)


def raw_problem(document: bytes) -> str | None:
    """Why this BSON document must not be written, or None. Cheap on the common shape
    (`_id` first, no `$` anywhere, few nested documents); otherwise decoded to look."""
    if len(document) > MAX_BSON_DOCUMENT_BYTES:
        return f"document is {len(document)} bytes as BSON, over MongoDB's 16 MiB limit"
    if len(document) < 5 or document[-1] != 0:
        return "document is not valid BSON: it does not end where its length prefix says"
    unsure = (
        document[5:9] != _ID_FIRST
        or _maybe_dollar_key(document)
        or document.count(_DOCUMENT) + document.count(_ARRAY) >= MAX_NESTING_DEPTH
    )
    if not unsure:
        return "_id must not be an array" if document[4] == _ARRAY else None
    try:
        decoded = bson.decode(document)
        check_document(decoded)
        check_keys_and_depth(decoded)
    except WireError as exc:
        return str(exc)
    except (BSONError, ValueError, OverflowError) as exc:
        return f"document is not valid BSON: {bson_problem(exc, {})}"
    return None


def _maybe_dollar_key(document: bytes) -> bool:
    """Could a key start with '$'? Binary values hold '$' bytes often (ObjectIds, dates,
    doubles); one right after a type byte is much rarer. True only means "look closer":
    nested keys and chance bytes cost a decode, never a wrong answer."""
    at = document.find(b"$", 5)
    while at != -1:
        if _TYPE_BYTE[document[at - 1]]:
            return True
        at = document.find(b"$", at + 1)
    return False


def record_id(document: bytes) -> Any:
    """The `_id` of a BSON document, read from its first element when it is an ObjectId
    or a string (no decoding); None when it must be looked up the slow way."""
    if document[5:9] != _ID_FIRST:
        return None
    kind = document[4]
    if kind == _OBJECT_ID and len(document) >= 21:
        return ObjectId(document[9:21])
    if kind == _STRING and len(document) >= 13:
        (length,) = _INT32.unpack_from(document, 9)
        if 1 <= length <= len(document) - 13:
            return document[13 : 13 + length - 1].decode("utf-8", "replace")
    return None


def with_id(document: bytes, oid: ObjectId) -> bytes:
    """`document` with `_id` (an ObjectId) put first: for documents read as BSON (a
    mongodump file) that have none, without decoding them."""
    element = bytes((_OBJECT_ID,)) + _ID_FIRST + oid.binary
    return _INT32.pack(len(document) + len(element)) + element + document[4:]
