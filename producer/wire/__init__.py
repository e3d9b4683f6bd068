"""The message format shared by the producer and the consumer.

It stands alone: importing it loads no other part of the producer and registers no
hooks, so the consumer (and any tool) can read and write messages without the web
app's machinery. Everything public is named here. See docs/wire-format.md."""

from .attributes import (
    ENCODING_ATTRIBUTE,
    FORMAT_ATTRIBUTE,
    FORMAT_VERSION,
    PARTITION_ATTRIBUTE,
    PARTITION_OVERHEAD,
    RECORDS_ATTRIBUTE,
    Attributes,
    attribute_value,
    attributes_size,
    message_attributes,
    single_record_limit,
    string_attribute,
)
from .checks import (
    MAX_BSON_DOCUMENT_BYTES,
    MAX_COLLECTION_NAME_BYTES,
    MAX_NESTING_DEPTH,
    bson_problem,
    check_collection_name,
    check_document,
)
from .compression import DEFAULT_MAX_DECODED_BYTES, ENCODINGS, GZIP, IDENTITY, ZSTD
from .errors import ProducerError, RecordTooLarge, WireError
from .grouping import bounded_groups
from .jsonlines import decode_line, encode_record, iter_records, join_lines
from .messages import compress_body, decode_body, decode_message
from .records import BadRecord, Record

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "ENCODINGS",
    "ENCODING_ATTRIBUTE",
    "FORMAT_ATTRIBUTE",
    "FORMAT_VERSION",
    "GZIP",
    "IDENTITY",
    "MAX_BSON_DOCUMENT_BYTES",
    "MAX_COLLECTION_NAME_BYTES",
    "MAX_NESTING_DEPTH",
    "PARTITION_ATTRIBUTE",
    "PARTITION_OVERHEAD",
    "RECORDS_ATTRIBUTE",
    "ZSTD",
    "Attributes",
    "BadRecord",
    "ProducerError",
    "Record",
    "RecordTooLarge",
    "WireError",
    "attribute_value",
    "attributes_size",
    "bounded_groups",
    "bson_problem",
    "check_collection_name",
    "check_document",
    "compress_body",
    "decode_body",
    "decode_line",
    "decode_message",
    "encode_record",
    "iter_records",
    "join_lines",
    "message_attributes",
    "single_record_limit",
    "string_attribute",
]
