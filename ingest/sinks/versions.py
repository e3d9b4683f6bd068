"""Version-guarded writes (--version-field): a record is written only if its version is
higher than the stored document's.

A version is the value of one top-level field. Comparable versions are numbers
(integers and doubles; not NaN, not booleans) and dates, numbers with numbers and
dates with dates: MongoDB's $lt never compares across types, so neither does this.
A record without a version, or with one of another type, is a bad record. A stored
document without the field (written before versions were used) is older than any
version. An equal version is a duplicate (a redelivery); a lower one is stale."""

from __future__ import annotations

import datetime
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson.datetime_ms import DatetimeMS

from ingest.errors import ConfigError
from ingest.sinks.base import DUPLICATE, STALE, Outcome, WriteMode, rejected
from ingest.sinks.documents import type_name

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MILLISECOND = datetime.timedelta(milliseconds=1)


class VersionKind(enum.Enum):
    NUMBER = "a number"
    DATE = "a date"
    OBJECT_ID = "an ObjectId"  # operations' default version (ingest/sinks/operations.py)


@dataclass(frozen=True, slots=True)
class Version:
    kind: VersionKind
    value: int | float  # numbers as they are; dates in ms since the epoch; ObjectIds' bytes


def checked_version_field(mode: WriteMode, field: str | None) -> str | None:
    """Insert-once never overwrites, so a version there is a configuration mistake."""
    if field is not None and mode is WriteMode.INSERT_ONCE:
        raise ConfigError("--version-field needs --write-mode replace or merge")
    return field


def read_version(document: Mapping[str, Any], field: str) -> Version | str:
    """The document's version, or why it has none that a write can compare."""
    if field not in document:
        return f"the record has no version: field {field} is missing"
    return as_version(document[field]) or (
        f"version field {field} must be a number or a date, not {type_name(document[field])}"
    )


def as_version(value: Any) -> Version | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return Version(VersionKind.NUMBER, value)
    if isinstance(value, datetime.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)  # BSON dates are UTC
        return Version(VersionKind.DATE, (aware - _EPOCH) // _MILLISECOND)
    if isinstance(value, DatetimeMS):  # a date outside Python's range
        return Version(VersionKind.DATE, int(value))
    return None


def guard(field: str, value: Any) -> dict[str, Any]:
    """The filter beside _id that lets a write through only over a lower version (or
    none): a stored document it does not match makes the upsert a duplicate-key error."""
    return {"$or": [{field: {"$lt": value}}, {field: {"$exists": False}}]}


def against_stored(incoming: Version, stored: Mapping[str, Any], field: str) -> Outcome | None:
    """What the stored document makes of a record with this version: None when the
    record is newer (write it), else STALE, DUPLICATE (the same version) or REJECTED
    (the stored version is of another kind, so no write can ever pass it)."""
    if field not in stored:
        return None
    current = as_version(stored[field])
    if current is None or current.kind is not incoming.kind:
        what = type_name(stored[field]) if current is None else current.kind.value
        return rejected(
            f"version field {field} is {incoming.kind.value}, but the stored document's is"
            f" {what}: versions of one _id must all be numbers or all dates"
        )
    if incoming.value > current.value:
        return None
    return DUPLICATE if incoming.value == current.value else STALE
