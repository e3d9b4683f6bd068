"""What MongoDB's answers mean for the records of a bulk, and reasons in its own words.

Classified by what the server did, not by the exception's type: it answered per
operation (outcomes, mongo_bulk.py), answered with one error for the whole command (the
bulk is refused and bisected, unless the error names the server's own state or our
access: an outage), hung up (to be checked: does it still answer a query?), or did not
answer in time or at all: an outage (SinkUnavailable), never the records' fault. What
the driver refuses before sending (a name, a document it cannot encode) is about the
records; any other client-side error is a bug, raised as it is for the write stage to
contain to the record that causes it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from bson.errors import InvalidBSON, InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DocumentTooLarge,
    ExecutionTimeout,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from ingest.errors import SinkUnavailable
from ingest.sinks.isolation import BulkRefused

DUPLICATE_KEY_CODES: Final = frozenset({11000, 11001})
# Errors that say "the server cannot now", not "this record is bad": for a whole command
# an outage; for one record among others that were written, an attempt to try again.
TRANSIENT_CODES: Final = frozenset(
    {6, 7, 24, 46, 50, 64, 89, 91, 112, 189, 202, 262, 462, 9001, 10107, 11600, 11602, 13435,
     13436, 16500}
)  # fmt: skip
# Errors about access or resources rather than the records: an outage.
# (Unauthorized, AuthenticationFailed, OutOfDiskSpace.)
ENVIRONMENT_CODES: Final = frozenset({13, 18, 14031})
# What the driver (or our own reading of a record) raises before sending when one
# document cannot become BSON: ints beyond 64 bits and lone surrogates come out of valid
# JSON, and a format-2 document's bytes may not be valid BSON.
UNENCODABLE: Final = (
    DocumentTooLarge, InvalidDocument, InvalidBSON, OverflowError, UnicodeEncodeError,
)  # fmt: skip
# FerretDB prefixes PostgreSQL's message with its Go call frames: [file.go:12 pkg.Func].
_GO_FRAMES: Final = re.compile(r"^(?:\[[^\]]*\.go:\d+[^\]]*\]\s*)+(?:ERROR:\s*)?")


def fail_bulk(exc: PyMongoError) -> NoReturn:
    """What a bulk that raised `exc` as a whole means, as the exception that says what to
    do (BulkRefused: bisect it; SinkUnavailable: an outage; AutoReconnect:
    the caller checks the server still answers); anything else is raised as it is."""
    if isinstance(exc, OperationFailure):
        reason = server_reason(exc.code, exc.details or {}, str(exc))
        if about_the_server(exc.code, exc.has_error_label("RetryableWriteError")):
            raise SinkUnavailable(f"MongoDB: {reason}") from exc
        raise BulkRefused(reason) from exc
    if isinstance(exc, NotPrimaryError):  # an election, a primary stepping down
        raise SinkUnavailable(f"MongoDB has no writable primary now: {_short(exc)}") from exc
    if isinstance(exc, NetworkTimeout | ExecutionTimeout | WTimeoutError):  # slow is not refused
        raise SinkUnavailable(f"MongoDB did not answer in time: {_short(exc)}") from exc
    if isinstance(exc, AutoReconnect) and not isinstance(exc, ServerSelectionTimeoutError):
        raise exc  # hung up mid-bulk: the caller checks whether it still answers
    if isinstance(exc, ConnectionFailure):
        raise SinkUnavailable(f"MongoDB unreachable: {_short(exc)}") from exc
    raise exc  # a client-side error (a bug): contained by the write stage


def about_the_server(code: int | None, retryable: bool) -> bool:
    """Errors that name the server's state or our permissions, not a record."""
    return code in TRANSIENT_CODES or code in ENVIRONMENT_CODES or retryable


def server_reason(code: int | None, details: Mapping[str, Any], fallback: str) -> str:
    """The server's own code and message, as the record's dead-letter reason."""
    message = str(details.get("errmsg") or fallback).splitlines()[0]
    message = _GO_FRAMES.sub("", message)[:300]
    name = details.get("codeName")
    label = f"error {code} {name}" if name else f"error {code}"
    return f"refused by the database ({label}): {message}"


def _short(exc: PyMongoError) -> str:
    return str(exc).splitlines()[0][:200]


def cause(exc: PyMongoError) -> str:
    """pymongo's text up to its first clause: the host and why, without the configured
    timeouts and the topology description that follow."""
    return str(exc).split(",", 1)[0].split(" (configured timeouts", 1)[0][:200]
