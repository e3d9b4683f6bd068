"""SQS message attributes: the names this format uses, and their values as SQS wants them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from .compression import IDENTITY

#: Format 1: JSON Lines of Extended JSON. Format 2: BSON documents, compressed. A message
#: without the format attribute is format 1 (what any tool writes by hand).
JSON_LINES: Final = "1"
BSON_RECORDS: Final = "2"
FORMATS: Final = (JSON_LINES, BSON_RECORDS)
FORMAT_VERSION: Final = JSON_LINES  # kept for format-1 writers
FORMAT_ATTRIBUTE: Final = "ingest-format"
ENCODING_ATTRIBUTE: Final = "ingest-encoding"
RECORDS_ATTRIBUTE: Final = "ingest-records"
#: Standard queues: the records' partition key (FIFO queues use MessageGroupId).
PARTITION_ATTRIBUTE: Final = "ingest-partition-key"
#: The largest partition-key attribute (a 128-character key), as SQS counts its size.
PARTITION_OVERHEAD: Final = len(PARTITION_ATTRIBUTE) + len("String") + 128

Attributes = dict[str, dict[str, str]]


def string_attribute(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def message_attributes(encoding: str, record_count: int, version: str = JSON_LINES) -> Attributes:
    """SQS MessageAttributes for a body in format `version`."""
    return {
        FORMAT_ATTRIBUTE: string_attribute(version),
        ENCODING_ATTRIBUTE: string_attribute(encoding),
        RECORDS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(record_count)},
    }


def attributes_size(attributes: Mapping[str, Mapping[str, str]]) -> int:
    """Bytes SQS counts toward the message size for these attributes."""
    return sum(
        len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
        for name, value in attributes.items()
    )


def single_record_limit(max_message_bytes: int, version: str = JSON_LINES) -> int:
    """Largest record (line, or BSON document) that fits alone in an uncompressed message."""
    room = max_message_bytes - attributes_size(message_attributes(IDENTITY, 1, version))
    if version == JSON_LINES:
        return room
    # Format 2 is base64 (4 bytes for 3), around a one-name table and a record header.
    return room * 3 // 4 - ONE_NAME_TABLE_BYTES - RECORD_HEADER_BYTES


#: Format 2's framing, as single_record_limit counts it: the collection table with one
#: name of the longest kind (120 bytes), and the largest record header (flags, index, trace).
ONE_NAME_TABLE_BYTES: Final = 4 + 1 + 2 + 4 + 121 + 1
RECORD_HEADER_BYTES: Final = 3 + 1 + 255


def attribute_value(attributes: Mapping[str, Any] | None, name: str) -> str | None:
    if not attributes or name not in attributes:
        return None
    value = attributes[name]
    if isinstance(value, Mapping):
        found = value.get("StringValue")
        return found if isinstance(found, str) else None
    return str(value)


#: How a queue URL looks, for the errors that refuse one.
QUEUE_URL_FORM: Final = "https://sqs.<region>.amazonaws.com/<account>/<queue name>"


def is_queue_url(url: str) -> bool:
    """An SQS queue URL: http(s), a host and a path (the account and the queue's name).
    Both sides refuse anything else at start, not at the first SQS call."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and bool(parts.path.strip("/"))
