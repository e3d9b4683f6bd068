"""What a decoded message holds: records, and the records that could not be read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .operations import Operation


@dataclass(frozen=True, slots=True)
class Record:
    collection: str
    document: Mapping[str, Any]  # a dict (format 1) or a RawBSONDocument (format 2): read-only
    source: str | bytes  # as sent: the JSON line (format 1) or the BSON document (format 2)
    trace: str | None = None  # the W3C traceparent of the span that sent it, if any
    # An update or delete (`document` is then its envelope); None: a document to insert.
    operation: Operation | None = None
    # When SQS took the message carrying it (epoch seconds, SQS's SentTimestamp), noted
    # by the consumer as it decodes; not part of the format. None where unknown.
    sent_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BadRecord:
    number: int  # 1-based line (format 1) or record (format 2) within the message
    reason: str
    source: str | bytes  # the line, or the record's BSON bytes
    collection: str | None = None  # format 2, when its index named one
    # Format 2: the framing broke here, so the records after it could not be found.
    rest_unreadable: bool = False
    operation: bool = False  # it was sent as an operation (a dead letter keeps the kind)
