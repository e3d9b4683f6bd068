"""What a decoded message holds: records, and the records that could not be read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
