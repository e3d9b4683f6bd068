"""What MongoDB's answers mean for the records of a bulk, and reasons in its own words.

Classified by what the server did, not by the exception's type: it answered per
operation (outcomes), answered with one error for the whole command (the bulk is
refused, unless the error names the server's own state or our access: then every
record is retried), hung up (to be checked: does it still answer?), was too slow
(retries), or could not be reached at all (SinkUnavailable)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from bson.errors import InvalidBSON, InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    DocumentTooLarge,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from ingest.errors import SinkUnavailable
from ingest.sinks.base import Outcome, OutcomeKind, rejected, retry
from ingest.sinks.isolation import BulkRefused

DUPLICATE_KEY_CODES: Final = frozenset({11000, 11001})
# Per-document and whole-command errors that say "try again", not "this record is bad".
TRANSIENT_CODES: Final = frozenset(
    {6, 7, 24, 46, 50, 64, 89, 91, 112, 189, 202, 262, 462, 9001, 10107, 11600, 11602, 13435,
     13436, 16500}
)  # fmt: skip
# Whole-command errors about access or resources rather than the records: retry them all.
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


def classify_failure(exc: PyMongoError, ops: int) -> list[Outcome]:
    """The outcomes of a bulk of `ops` operations that raised `exc` as a whole, or
    the exception that says what to do with it (BulkRefused, SinkUnavailable)."""
    if isinstance(exc, OperationFailure):
        reason = server_reason(exc.code, exc.details or {}, str(exc))
        if _about_the_server(exc):
            return [retry(reason)] * ops
        raise BulkRefused(reason) from exc
    if isinstance(exc, NetworkTimeout):  # slow is not refused
        return [retry(f"the database did not answer in time: {_short(exc)}")] * ops
    if isinstance(exc, ServerSelectionTimeoutError):
        raise SinkUnavailable(f"MongoDB unreachable: {_short(exc)}") from exc
    if isinstance(exc, AutoReconnect):  # hung up mid-bulk: the caller checks it still answers
        raise exc
    raise SinkUnavailable(f"MongoDB unavailable: {type(exc).__name__}: {_short(exc)}") from exc


def _about_the_server(exc: OperationFailure) -> bool:
    """Whole-command errors that name the server's state or our permissions, not a record."""
    return (
        exc.code in TRANSIENT_CODES
        or exc.code in ENVIRONMENT_CODES
        or exc.has_error_label("RetryableWriteError")
    )


def server_reason(code: int | None, details: Mapping[str, Any], fallback: str) -> str:
    """The server's own code and message, as the record's dead-letter reason."""
    message = str(details.get("errmsg") or fallback).splitlines()[0]
    message = _GO_FRAMES.sub("", message)[:300]
    name = details.get("codeName")
    label = f"error {code} {name}" if name else f"error {code}"
    return f"refused by the database ({label}): {message}"


def apply_write_errors(
    details: Mapping[str, Any], outcomes: list[Outcome], on_duplicate: Outcome, *, ordered: bool
) -> None:
    """Per-operation errors of a BulkWriteError, as outcomes."""
    failed_at = len(outcomes)
    for error in details.get("writeErrors", []):
        index, code = int(error["index"]), int(error.get("code", 0))
        failed_at = min(failed_at, index)
        reason = server_reason(code, error, "")
        if code in DUPLICATE_KEY_CODES:
            outcomes[index] = on_duplicate
        elif code in TRANSIENT_CODES:
            outcomes[index] = retry(reason)
        else:
            outcomes[index] = rejected(reason)
    if ordered:
        # An ordered bulk stops at its first error: what follows was never tried.
        for index in range(failed_at + 1, len(outcomes)):
            outcomes[index] = retry("not attempted after an earlier error in an ordered write")
    if details.get("writeConcernErrors"):
        # Written on the primary but not acknowledged as asked: write again later;
        # the next attempt collapses into a duplicate.
        for index, outcome in enumerate(outcomes):
            if outcome.kind is OutcomeKind.WRITTEN:
                outcomes[index] = retry("write concern not satisfied")


def _short(exc: PyMongoError) -> str:
    return str(exc).splitlines()[0][:200]


def cause(exc: PyMongoError) -> str:
    """pymongo's text up to its first clause: the host and why, without the configured
    timeouts and the topology description that follow."""
    return str(exc).split(",", 1)[0].split(" (configured timeouts", 1)[0][:200]
