"""Deterministic _ids for backfilled documents that have none.

A re-run of the same input must produce the same _id for the same record, so
the consumer's insert-once write collapses it as a duplicate. The id is an
ObjectId whose 12 bytes are BLAKE2b-96 of "<source id>\\x00<position>", where
the source id is the file's path relative to the backfill PATH (or
--source-id) and the position is the 1-based line (JSON Lines), CSV row start
line, or document index (BSON). With a time field, the first 4 bytes are that
time instead, so the id still sorts and reads as the record's time (the
remaining 8 bytes stay the hash, so ids of equal times do not collide).
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime
from typing import Any

from bson.objectid import ObjectId

_MAX_TIMESTAMP = 0xFFFFFFFF


def derive_object_id(source_id: str, position: int, timestamp: int | None = None) -> ObjectId:
    digest = hashlib.blake2b(f"{source_id}\x00{position}".encode(), digest_size=12).digest()
    if timestamp is None:
        return ObjectId(digest)
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise ValueError(f"time {timestamp} does not fit an ObjectId's 4-byte timestamp")
    return ObjectId(struct.pack(">I", timestamp) + digest[:8])


def timestamp_of(value: Any) -> int:
    """Seconds since the epoch from a datetime, a number of seconds, or an ISO 8601 string."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(moment.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        try:
            return timestamp_of(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise ValueError(f"cannot read a time from {value!r:.60}")
