"""The message format shared by the producer and the consumer (format 1).

A message body is JSON Lines: one record per line, each line a JSON object
``{"c": "<collection>", "d": {<document as relaxed MongoDB Extended JSON>}}``.
A one-line body is a single-record message, so the plain one-record-per-message
style of other producers is the same format. Packing is just more lines.

Two message attributes describe the body:

* ``ingest-format``: the format version, ``"1"``. Missing means ``"1"``.
* ``ingest-encoding``: ``identity`` (default), ``gzip`` or ``zstd``. Compressed
  bodies are base64 text, since an SQS body must be valid XML characters.

Lines are decoded one by one, so one bad record in a packed message is
rejected alone and the good records beside it are still written.
See docs/wire-format.md.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from bson import json_util
from bson.errors import BSONError, InvalidId
from bson.objectid import ObjectId

FORMAT_VERSION: Final = "1"
FORMAT_ATTRIBUTE: Final = "ingest-format"
ENCODING_ATTRIBUTE: Final = "ingest-encoding"
RECORDS_ATTRIBUTE: Final = "ingest-records"
#: Standard queues: the records' partition key (FIFO queues use MessageGroupId).
PARTITION_ATTRIBUTE: Final = "ingest-partition-key"
IDENTITY: Final = "identity"
GZIP: Final = "gzip"
ZSTD: Final = "zstd"
ENCODINGS: Final = (IDENTITY, GZIP, ZSTD)

#: MongoDB's own limit on one document.
MAX_BSON_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
#: MongoDB rejects documents nested deeper than this.
MAX_NESTING_DEPTH: Final = 100
#: Guard against compression bombs: a body may not inflate past this.
DEFAULT_MAX_DECODED_BYTES: Final = 32 * 1024 * 1024
MAX_COLLECTION_NAME_BYTES: Final = 120

_JSON_OPTIONS: Final = json_util.RELAXED_JSON_OPTIONS
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


class WireError(ValueError):
    """Raised for every malformed message or record. Its text is the reason
    the consumer puts on the dead-lettered message."""


class RecordTooLarge(WireError):
    """A single record does not fit in one message of the configured size."""


@dataclass(frozen=True, slots=True)
class Record:
    collection: str
    document: dict[str, Any]
    line: str  # the encoded line, kept so a rejected record can be dead-lettered as sent


@dataclass(frozen=True, slots=True)
class BadRecord:
    line_number: int  # 1-based line within the message body
    line: str
    reason: str


# ---------------------------------------------------------------- validation


def check_collection_name(name: object) -> str:
    """Return ``name`` if MongoDB (and this pipeline) accept it as a collection."""
    if not isinstance(name, str):
        raise WireError(f"collection must be a string, got {type(name).__name__}")
    if not name:
        raise WireError("collection name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_COLLECTION_NAME_BYTES:
        raise WireError(f"collection name is longer than {MAX_COLLECTION_NAME_BYTES} bytes")
    if name.startswith("system."):
        raise WireError(f"collection name {name[:60]!r} is reserved (system.*)")
    if "$" in name or "\x00" in name:
        raise WireError("collection name must not contain '$' or NUL")
    if name.startswith(".") or name.endswith("."):
        raise WireError("collection name must not start or end with '.'")
    return name


def check_document(document: object) -> dict[str, Any]:
    """Reject what MongoDB would reject for the whole bulk write, or store oddly."""
    if not isinstance(document, dict):
        raise WireError(f"document must be a JSON object, got {type(document).__name__}")
    if "_id" not in document:
        raise WireError("document has no _id")
    if isinstance(document["_id"], list):
        raise WireError("_id must not be an array")
    for key in document:
        if key.startswith("$"):
            raise WireError(f"top-level key {key[:60]!r} starts with '$'")
    return document


_KNOWN_COLLECTIONS: set[str] = set()
_MAX_KNOWN_COLLECTIONS: Final = 10_000


def _known_collection(name: object) -> str:
    """check_collection_name, remembered: a consumer sees the same few names all day."""
    if type(name) is str and name in _KNOWN_COLLECTIONS:  # str subclasses (bson Code) may not hash
        return name
    checked = check_collection_name(name)
    if type(checked) is not str:
        return checked
    if len(_KNOWN_COLLECTIONS) >= _MAX_KNOWN_COLLECTIONS:
        _KNOWN_COLLECTIONS.clear()  # bounded: a flood of distinct names costs re-checks only
    _KNOWN_COLLECTIONS.add(checked)
    return checked


def _check_keys_and_depth(value: object, depth: int = 0) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise WireError(f"document is nested deeper than {MAX_NESTING_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise WireError("a key contains NUL")
            _check_keys_and_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_keys_and_depth(item, depth + 1)


# ------------------------------------------------------------------ encoding


def encode_record(collection: str, document: Mapping[str, Any]) -> str:
    """One record as one line of relaxed Extended JSON (no newline)."""
    record = {"c": collection, "d": document}
    try:
        # json's C encoder with bson's `default` for the BSON types is several
        # times faster than json_util.dumps, which walks the document in Python.
        return json.dumps(record, default=_default, separators=_SEPARATORS, allow_nan=False)
    except ValueError:
        # NaN and Infinity need Extended JSON's {"$numberDouble": ...} form.
        return json_util.dumps(record, json_options=_JSON_OPTIONS, separators=_SEPARATORS)
    except (TypeError, BSONError) as exc:
        raise WireError(f"document cannot be encoded: {exc}") from exc


def join_lines(lines: Iterable[str]) -> str:
    return "\n".join(lines)


def compress_body(text: str, encoding: str, level: int | None = None) -> str:
    """Compress a JSON Lines body and return it as base64 text."""
    raw = text.encode("utf-8")
    if encoding == IDENTITY:
        return text
    if encoding == GZIP:
        packed = gzip.compress(raw, compresslevel=6 if level is None else level, mtime=0)
    elif encoding == ZSTD:
        packed = _zstd().ZstdCompressor(level=3 if level is None else level).compress(raw)
    else:
        raise WireError(f"unknown encoding {encoding!r}")
    return base64.b64encode(packed).decode("ascii")


def message_attributes(encoding: str, record_count: int) -> dict[str, dict[str, str]]:
    """SQS MessageAttributes for a body in this format."""
    return {
        FORMAT_ATTRIBUTE: {"DataType": "String", "StringValue": FORMAT_VERSION},
        ENCODING_ATTRIBUTE: {"DataType": "String", "StringValue": encoding},
        RECORDS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(record_count)},
    }


def attributes_size(attributes: Mapping[str, Mapping[str, str]]) -> int:
    """Bytes SQS counts toward the message size for these attributes."""
    return sum(
        len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
        for name, value in attributes.items()
    )


# ------------------------------------------------------------------ decoding


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


def attribute_value(attributes: Mapping[str, Any] | None, name: str) -> str | None:
    if not attributes or name not in attributes:
        return None
    value = attributes[name]
    if isinstance(value, Mapping):
        found = value.get("StringValue")
        return found if isinstance(found, str) else None
    return str(value)


def decode_body(
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> str:
    """Check the format version and undo the encoding: returns JSON Lines text.

    Raises WireError when the whole message is unreadable."""
    version = attribute_value(attributes, FORMAT_ATTRIBUTE)
    if version is not None and version != FORMAT_VERSION:
        raise WireError(f"unknown format version {version[:40]!r} (this consumer reads '1')")
    encoding = attribute_value(attributes, ENCODING_ATTRIBUTE) or IDENTITY
    if encoding == IDENTITY:
        if len(body) > max_decoded_bytes:
            raise WireError(f"body is larger than {max_decoded_bytes} bytes")
        return body
    if encoding not in (GZIP, ZSTD):
        raise WireError(f"unknown encoding {encoding[:40]!r}")
    try:
        packed = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise WireError(f"{encoding} body is not valid base64: {exc}") from exc
    raw = _inflate(packed, encoding, max_decoded_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"decompressed body is not valid UTF-8: {exc}") from exc


def _inflate(packed: bytes, encoding: str, limit: int) -> bytes:
    try:
        if encoding == GZIP:
            inflater = zlib.decompressobj(wbits=31)
            raw = inflater.decompress(packed, limit + 1)
            if len(raw) > limit:
                raise WireError(f"gzip body inflates past {limit} bytes (compression bomb?)")
            if not inflater.eof:
                raise WireError("gzip body is truncated")
            return raw
        return _inflate_zstd(packed, limit)
    except WireError:
        raise
    except Exception as exc:  # zlib.error, zstandard.ZstdError
        raise WireError(f"{encoding} body cannot be decompressed: {exc}") from exc


def _inflate_zstd(packed: bytes, limit: int) -> bytes:
    zstd = _zstd()
    declared = zstd.frame_content_size(packed)
    if declared > limit:
        raise WireError(f"zstd body declares {declared} bytes, over {limit} (compression bomb?)")
    # The stream reader caps the output; decompressobj alone would inflate a bomb fully.
    with zstd.ZstdDecompressor().stream_reader(io.BytesIO(packed)) as reader:
        raw: bytes = reader.read(limit + 1)
    if len(raw) > limit:
        raise WireError(f"zstd body inflates past {limit} bytes (compression bomb?)")
    complete = len(raw) == declared if declared >= 0 else _zstd_frame_ends(packed)
    if not complete:
        raise WireError("zstd body is truncated")
    return raw


def _zstd_frame_ends(packed: bytes) -> bool:
    reader = _zstd().ZstdDecompressor().decompressobj()
    reader.decompress(packed)  # safe: the capped read above already bounded the output
    return bool(reader.eof)


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise WireError("zstd encoding needs the 'zstandard' package") from exc
    return zstandard


def decode_line(line: str) -> Record:
    """Decode and validate one record line."""
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
    if "c" not in obj or "d" not in obj:
        raise WireError("record must have 'c' (collection) and 'd' (document)")
    collection = _known_collection(obj["c"])
    document = check_document(obj["d"])
    # Only documents with many brackets can be deep or hide NUL keys cheaply missed.
    if "\\u0000" in line or line.count("{") + line.count("[") > MAX_NESTING_DEPTH:
        _check_keys_and_depth(document)
    if len(line) * 8 > MAX_BSON_DOCUMENT_BYTES:
        _check_bson_size(document)
    return Record(collection, document, line)


def _check_bson_size(document: dict[str, Any]) -> None:
    import bson

    try:
        size = len(bson.encode(document))
    except (BSONError, OverflowError, ValueError) as exc:
        raise WireError(bson_problem(exc, document)) from exc
    if size > MAX_BSON_DOCUMENT_BYTES:
        raise WireError(f"document is {size} bytes as BSON, over MongoDB's 16 MiB limit")


_CLASS_REPR: Final = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>")


def bson_problem(exc: BaseException, document: Mapping[str, Any]) -> str:
    """Why `document` cannot become BSON, for the person who sent it (the driver's
    own text names Python types and classes)."""
    if isinstance(exc, OverflowError):
        big = _first(document, lambda v: type(v) is int and not -(2**63) <= v < 2**63)
        if big is None:
            return "a number does not fit in 64 bits"
        shown = f"2**{big.bit_length() - 1}" if big > 0 and big & (big - 1) == 0 else str(big)
        return (
            f"integer {shown if len(shown) <= 40 else shown[:37] + '...'} does not fit in 64 bits"
        )
    if isinstance(exc, UnicodeEncodeError):
        char = exc.object[exc.start : exc.start + 1] if isinstance(exc.object, str) else "?"
        return f"a string holds a lone surrogate (\\u{ord(char):04x}), which is not valid UTF-8"
    if type(exc).__name__ == "DocumentTooLarge":
        return "document is over MongoDB's 16 MiB limit"
    text = _CLASS_REPR.sub(r"\1", str(exc).splitlines()[0] if str(exc) else "")
    return (
        f"document cannot be stored as BSON: {text[:200]}"
        if text
        else "document cannot be stored as BSON"
    )


def _first(value: object, test: Callable[[object], bool], depth: int = 0) -> Any:
    """The first value in a document (depth first) that passes `test`."""
    if test(value):
        return value
    if depth > MAX_NESTING_DEPTH:
        return None
    items = (
        value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    )
    for item in items:
        found = _first(item, test, depth + 1)
        if found is not None:
            return found
    return None


def iter_records(text: str) -> Iterator[Record | BadRecord]:
    """Decode every line of a JSON Lines body; bad lines come back as BadRecord."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield decode_line(line)
        except WireError as exc:
            yield BadRecord(number, line, str(exc))


def decode_message(
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> list[Record | BadRecord]:
    """Decode a whole message. Raises WireError if nothing in it is readable."""
    text = decode_body(body, attributes, max_decoded_bytes=max_decoded_bytes)
    items = list(iter_records(text))
    if not items:
        raise WireError("message holds no records")
    return items


def new_object_id() -> ObjectId:
    return ObjectId()
