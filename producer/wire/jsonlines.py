"""Format 1: JSON Lines of relaxed MongoDB Extended JSON.

A message body holds one record per line, each line a JSON object
``{"c": "<collection>", "d": {<document as relaxed Extended JSON>}}``, or for an update
or a delete ``{"c": "<collection>", "o": {<its envelope>}}`` (operations.py). A one-line
body is a single-record message, so the plain one-record-per-message style of other
producers is the same format. Lines are decoded one by one, so one bad record in a
packed message is rejected alone. See docs/wire-format.md."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from bson import json_util
from bson.errors import BSONError, InvalidId
from bson.objectid import ObjectId

from .checks import (
    CLASS_REPR as _CLASS_REPR,
)
from .checks import (
    MAX_BSON_DOCUMENT_BYTES,
    MAX_NESTING_DEPTH,
    check_bson_size,
    check_document,
    check_keys_and_depth,
    known_collection,
)
from .errors import WireError
from .operations import read_envelope
from .records import BadRecord, Record

_JSON_OPTIONS: Final = json_util.RELAXED_JSON_OPTIONS
MAX_TRACE_CHARS: Final = 255  # what format 2's one length byte holds
_json_util_default = partial(json_util.default, json_options=_JSON_OPTIONS)
_NO_OFFSET: Final = timedelta(0)


def _default(value: Any) -> Any:
    """json_util.default, with the two types every record carries done inline:
    json_util spends ~10 µs of a 1 KB record's 20 on an ObjectId and two dates
    (type dispatch, two strftime calls). Same output (tested against json_util)."""
    kind = type(value)
    if kind is ObjectId:
        return {"$oid": str(value)}
    utc = kind is datetime and (value.tzinfo is None or value.utcoffset() == _NO_OFFSET)
    if utc and value.year >= 1970:
        millis = value.microsecond // 1000
        fraction = f".{millis:03d}" if millis else ""
        return {"$date": f"{value.isoformat(timespec='seconds')[:19]}{fraction}Z"}
    return _json_util_default(value)


_SEPARATORS: Final = (",", ":")


def encode_record(collection: str, document: Mapping[str, Any], trace: str | None = None) -> str:
    """One record as one line of relaxed Extended JSON (no newline). Text stays UTF-8
    (\\u escapes made CJK and emoji 2.6 times larger on the wire, and SQS bills by size),
    but for the characters an SQS body must not hold."""
    return _encode_line({"c": collection, "d": document}, trace)


def encode_operation(collection: str, envelope: Mapping[str, Any], trace: str | None = None) -> str:
    """An operation as one line: its envelope under "o", and no "d", which a consumer
    that predates operations requires (it refuses the line rather than insert it)."""
    return _encode_line({"c": collection, "o": envelope}, trace)


def _encode_line(record: dict[str, Any], trace: str | None) -> str:
    if trace is not None:
        record["t"] = trace  # the sender's span (W3C traceparent): the envelope, not the document
    try:
        # json's C encoder with bson's `default` for the BSON types is several
        # times faster than json_util.dumps, which walks the document in Python.
        line = json.dumps(
            record, default=_default, separators=_SEPARATORS, allow_nan=False, ensure_ascii=False
        )
    except ValueError:
        # NaN and Infinity need Extended JSON's {"$numberDouble": ...} form.
        line = json_util.dumps(
            record, json_options=_JSON_OPTIONS, separators=_SEPARATORS, ensure_ascii=False
        )
    except (TypeError, BSONError) as exc:
        cause = _OBJECT_REPR.sub(r"a \1 object", _CLASS_REPR.sub(r"\1", str(exc)))
        raise WireError(f"document cannot be encoded: {cause}") from exc
    if line.isascii() or not _NOT_IN_SQS.search(line):
        return line
    return _NOT_IN_SQS.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


# Characters SQS refuses in a body (XML 1.0 outside #x9 #xA #xD #x20-#xD7FF
# #xE000-#xFFFD #x10000-#x10FFFF): JSON already escapes the control characters; lone
# surrogates and U+FFFE/U+FFFF are left, and must be escaped.
_OBJECT_REPR: Final = re.compile(r"<([\w.]+) object at 0x[0-9a-f]+>")
_NOT_IN_SQS: Final = re.compile("[\ud800-\udfff\ufffe\uffff]")


def join_lines(lines: Iterable[str]) -> str:
    return "\n".join(lines)


def _object_hook(obj: dict[str, Any]) -> Any:
    # Extended JSON wrappers ({"$oid": ...}, {"$date": ...}) lead with a '$' key;
    # checking only the first key keeps plain objects on the fast path.
    for key in obj:
        if key[:1] != "$":
            return obj
        if len(obj) == 1:
            value = obj[key]
            # The two wrappers every record carries, decoded ~20x faster than
            # json_util does; anything unusual goes to _wrapper.
            if key == "$oid" and type(value) is str and len(value) == 24:
                return _object_id(value)
            if key == "$date" and isinstance(value, str) and value.endswith("Z"):
                return _parse_date(value, obj)
        return _wrapper(key, obj)
    return obj


#: What each Extended JSON wrapper holds, as a sender would name it.
_WRAPPER_NAMES: Final = {
    "$oid": "ObjectId", "$date": "date", "$numberDecimal": "Decimal128",
    "$numberLong": "64-bit integer", "$numberInt": "32-bit integer", "$numberDouble": "double",
    "$uuid": "UUID", "$binary": "binary", "$timestamp": "timestamp", "$regex": "regular expression",
    "$regularExpression": "regular expression", "$code": "code", "$dbPointer": "DBPointer",
    "$minKey": "MinKey", "$maxKey": "MaxKey", "$symbol": "symbol", "$undefined": "undefined",
}  # fmt: skip


_INT_RANGES: Final = {"$numberLong": 64, "$numberInt": 32}


def _wrapper(key: str, obj: dict[str, Any]) -> Any:
    """An Extended JSON wrapper through json_util, with the checks it lacks and a reason
    written for the sender (json_util's own errors are Python and driver text)."""
    value = obj.get(key)
    if key == "$oid" and len(obj) == 1:
        # json_util turns {"$oid": null} into a fresh random ObjectId: not deterministic.
        return _object_id(value)
    try:
        decoded = json_util.object_hook(obj, _JSON_OPTIONS)
    except Exception as exc:  # json_util raises a dozen types, none of them for people
        raise WireError(_invalid(key, value, obj)) from exc
    bits = _INT_RANGES.get(key)
    if bits is not None and not -(2 ** (bits - 1)) <= decoded < 2 ** (bits - 1):
        raise WireError(f"invalid {_WRAPPER_NAMES[key]} value {_shown(value)}: out of range")
    return decoded


def _object_id(value: object) -> ObjectId:
    if isinstance(value, str) and len(value) == 24:
        try:
            return ObjectId(value)
        except InvalidId:
            pass
    raise WireError(f"invalid ObjectId value {_shown(value)}: expected 24 hex digits")


def _invalid(key: str, value: object, obj: dict[str, Any]) -> str:
    name = _WRAPPER_NAMES.get(key)
    if name is None or len(obj) > 2:
        return f"invalid Extended JSON value {_shown(obj)}"
    return f"invalid {name} value {_shown(value)}"


def _shown(value: object, limit: int = 60) -> str:
    """A value as the sender wrote it (JSON), cut to `limit` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_date(value: str, obj: dict[str, Any]) -> Any:
    # The common shape, "2026-01-02T03:04:05.678Z" (what encode_record writes), is
    # UTC already: parsed without the "Z" it is the naive UTC value json_util returns.
    if len(value) in (20, 24) and value[10] == "T":
        try:
            return datetime.fromisoformat(value[:-1])
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return json_util.object_hook(obj, _JSON_OPTIONS)
    if parsed.tzinfo is None:
        return json_util.object_hook(obj, _JSON_OPTIONS)
    # Same shape as json_util's: naive UTC, millisecond precision as BSON keeps.
    utc = parsed.astimezone(UTC).replace(tzinfo=None)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


# One decoder, built once: json.loads with keyword arguments builds a new one per call.
# Sharing it across threads is what json.loads itself does with its default decoder.
_loads = json.JSONDecoder(object_hook=_object_hook).decode


def decode_line(line: str, sent_at: float | None = None) -> Record:
    """Decode and validate one record line (`sent_at`: see Record)."""
    try:
        obj = _loads(line)
    except WireError:
        raise
    except RecursionError as exc:
        raise WireError("record is nested too deeply to decode") from exc
    except json.JSONDecodeError as exc:
        raise WireError(f"not valid JSON: {exc.msg} at column {exc.colno}") from exc
    except ValueError as exc:  # json's own checks beyond syntax (a lone surrogate pair...)
        raise WireError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise WireError(f"record must be a JSON object, got {type(obj).__name__}")
    if "o" in obj and "d" not in obj and "c" in obj:
        return _operation_line(obj, line, sent_at)
    if "c" not in obj or "d" not in obj:
        raise WireError("record must have 'c' (collection) and 'd' (document)")
    collection = known_collection(obj["c"])
    document = check_document(obj["d"])
    # Only documents with many brackets can be deep or hide NUL keys cheaply missed.
    if "\\u0000" in line or line.count("{") + line.count("[") > MAX_NESTING_DEPTH:
        check_keys_and_depth(document)
    if len(line) * 8 > MAX_BSON_DOCUMENT_BYTES:
        check_bson_size(document)
    return Record(collection, document, line, _trace(obj), None, sent_at)


def _trace(obj: dict[str, Any]) -> str | None:
    trace = obj.get("t")
    if not (isinstance(trace, str) and len(trace) <= MAX_TRACE_CHARS and trace.isascii()):
        return None  # a trace context is a courtesy: a bad one never blocks a record
    return trace


def _operation_line(obj: dict[str, Any], line: str, sent_at: float | None) -> Record:
    collection = known_collection(obj["c"])
    envelope = obj["o"]
    if not isinstance(envelope, dict):
        raise WireError(f"operation ('o') must be a JSON object, got {type(envelope).__name__}")
    check_keys_and_depth(envelope)
    if len(line) * 8 > MAX_BSON_DOCUMENT_BYTES:
        check_bson_size(envelope)
    return Record(collection, envelope, line, _trace(obj), read_envelope(envelope), sent_at)


def iter_records(text: str, sent_at: float | None = None) -> Iterator[Record | BadRecord]:
    """Decode every line of a JSON Lines body; bad lines come back as BadRecord."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield decode_line(line, sent_at)
        except WireError as exc:
            yield BadRecord(number, str(exc), line)
