"""SQS message attributes: the names this format uses, and their values as SQS wants them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .compression import IDENTITY

FORMAT_VERSION: Final = "1"
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


def message_attributes(encoding: str, record_count: int) -> Attributes:
    """SQS MessageAttributes for a body in this format."""
    return {
        FORMAT_ATTRIBUTE: string_attribute(FORMAT_VERSION),
        ENCODING_ATTRIBUTE: string_attribute(encoding),
        RECORDS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(record_count)},
    }


def attributes_size(attributes: Mapping[str, Mapping[str, str]]) -> int:
    """Bytes SQS counts toward the message size for these attributes."""
    return sum(
        len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
        for name, value in attributes.items()
    )


def single_record_limit(max_message_bytes: int) -> int:
    """Largest record line that fits alone in an uncompressed message."""
    return max_message_bytes - attributes_size(message_attributes(IDENTITY, 1))


def attribute_value(attributes: Mapping[str, Any] | None, name: str) -> str | None:
    if not attributes or name not in attributes:
        return None
    value = attributes[name]
    if isinstance(value, Mapping):
        found = value.get("StringValue")
        return found if isinstance(found, str) else None
    return str(value)
