"""The message format shared by the producer and the consumer.

It stands alone: importing it loads no other part of the producer and registers no
hooks, so the consumer (and any tool) can read and write messages without the web
app's machinery. Everything public is named here. See docs/wire-format.md."""

from .attributes import (
    BSON_RECORDS,
    ENCODING_ATTRIBUTE,
    FORMAT_ATTRIBUTE,
    FORMAT_VERSION,
    FORMATS,
    JSON_LINES,
    PARTITION_ATTRIBUTE,
    PARTITION_OVERHEAD,
    QUEUE_URL_FORM,
    RECORDS_ATTRIBUTE,
    Attributes,
    attribute_value,
    attributes_size,
    is_queue_url,
    message_attributes,
    single_record_limit,
    string_attribute,
)
from .bsonrecords import encode_document, framing_bytes, with_id
from .bsonrecords import pack as pack_bson
from .checks import (
    MAX_BSON_DOCUMENT_BYTES,
    MAX_COLLECTION_NAME_BYTES,
    MAX_DATABASE_NAME_BYTES,
    MAX_NESTING_DEPTH,
    bson_problem,
    check_collection_name,
    check_database_name,
    check_document,
    known_collection,
)
from .compression import DEFAULT_MAX_DECODED_BYTES, ENCODINGS, GZIP, IDENTITY, ZSTD
from .errors import ProducerError, RecordTooLarge, WireError
from .grouping import bounded_groups
from .jsonlines import decode_line, encode_record, iter_records, join_lines
from .messages import (
    bson_body,
    compress_body,
    decode_body,
    decode_message,
    format_of,
    json_line,
    readable,
    record_id,
    record_message,
)
from .records import BadRecord, Record
from .sqs_errors import SqsErrorKind, classify_sqs_error, sqs_error_of

__all__ = [
    "BSON_RECORDS",
    "DEFAULT_MAX_DECODED_BYTES",
    "ENCODINGS",
    "ENCODING_ATTRIBUTE",
    "FORMATS",
    "FORMAT_ATTRIBUTE",
    "FORMAT_VERSION",
    "GZIP",
    "IDENTITY",
    "JSON_LINES",
    "MAX_BSON_DOCUMENT_BYTES",
    "MAX_COLLECTION_NAME_BYTES",
    "MAX_DATABASE_NAME_BYTES",
    "MAX_NESTING_DEPTH",
    "PARTITION_ATTRIBUTE",
    "PARTITION_OVERHEAD",
    "QUEUE_URL_FORM",
    "RECORDS_ATTRIBUTE",
    "ZSTD",
    "Attributes",
    "BadRecord",
    "ProducerError",
    "Record",
    "RecordTooLarge",
    "SqsErrorKind",
    "WireError",
    "attribute_value",
    "attributes_size",
    "bounded_groups",
    "bson_body",
    "bson_problem",
    "check_collection_name",
    "check_database_name",
    "check_document",
    "classify_sqs_error",
    "compress_body",
    "decode_body",
    "decode_line",
    "decode_message",
    "encode_document",
    "encode_record",
    "format_of",
    "framing_bytes",
    "is_queue_url",
    "iter_records",
    "join_lines",
    "json_line",
    "known_collection",
    "message_attributes",
    "pack_bson",
    "readable",
    "record_id",
    "record_message",
    "single_record_limit",
    "sqs_error_of",
    "string_attribute",
    "with_id",
]
