"""Statements to the server and their per-record outcomes: one bulk, ordered bulks that
resume after a settled failure, and statements of their own.

A bulk's reply is read by pymongo; when the reply lacks a field pymongo needs (FerretDB
1.24 leaves `nModified` out of a reply to a failed update, and stops an unordered update
at its first failure), nothing in it can be trusted: every statement is sent again on
its own, and its own answer says what happened. Statements are idempotent by _id, so
sending one twice only finds it written already."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from ingest.errors import SinkUnavailable
from ingest.sinks.base import AFTER_FAILURE, WRITTEN, Outcome, OutcomeKind, rejected, retry
from ingest.sinks.modes import Document, Statement
from ingest.sinks.mongo_clashes import UniqueIndexes, explain, outcome_of
from ingest.sinks.mongo_errors import (
    DUPLICATE_KEY_CODES,
    UNENCODABLE,
    about_the_server,
    fail_bulk,
    server_reason,
)

#: A reply pymongo could not read: it raised this while merging it.
UNREADABLE_REPLY = (KeyError, TypeError)
PROBE_ID_PREFIX: Final = "ingest-bulk-probe-"


@dataclass(slots=True)
class Tally:
    """What a bulk's reply counts beyond per-statement errors: the documents its deletes
    removed (None: not known, e.g. statements sent again after an unreadable reply)."""

    removed: int | None = 0


@dataclass(frozen=True, slots=True)
class Target:
    """Where statements go, and what a duplicate-key error on the same _id means there."""

    collection: Collection[Document]
    same_id: Outcome  # e.g. DUPLICATE for inserts (a redelivery)
    indexes: UniqueIndexes = field(default_factory=UniqueIndexes)


def bulk(
    target: Target,
    statements: Sequence[Statement],
    *,
    ordered: bool = False,
    tally: Tally | None = None,
) -> list[Outcome]:
    """One bulk write; per-statement outcomes (see mongo_errors for a bulk failed as a whole)."""
    tally = tally if tally is not None else Tally()
    if not statements:
        return []  # pymongo refuses an empty bulk
    ops = [statement.op() for statement in statements]
    try:
        result = target.collection.bulk_write(ops, ordered=ordered)
    except BulkWriteError as exc:
        removed = exc.details.get("nRemoved")
        tally.removed = removed if isinstance(removed, int) else None
        return _outcomes(target, statements, exc.details, ordered=ordered)
    except UNENCODABLE:
        raise
    except UNREADABLE_REPLY:
        tally.removed = None  # what the first try removed is not known
        return one_at_a_time(target, statements, ordered=ordered)
    except PyMongoError as exc:
        fail_bulk(exc)
    tally.removed = result.deleted_count if result.acknowledged else None
    return [WRITTEN] * len(ops)


def in_order(target: Target, statements: Sequence[Statement]) -> list[Outcome]:
    """Ordered bulks; a settled failure skips only its statement, one to retry stops."""
    results: list[Outcome] = []
    remaining = list(statements)
    while remaining:
        outcomes = bulk(target, remaining, ordered=True)
        failed = next(
            (i for i, o in enumerate(outcomes) if o.kind is not OutcomeKind.WRITTEN), None
        )
        if failed is None:
            return results + outcomes
        results += outcomes[: failed + 1]
        if not outcomes[failed].settled:
            return results + [AFTER_FAILURE] * (len(remaining) - failed - 1)
        remaining = remaining[failed + 1 :]
    return results


def one_at_a_time(
    target: Target, statements: Sequence[Statement], *, ordered: bool = False
) -> list[Outcome]:
    """Each statement on its own, in order; ordered: stop at one to retry."""
    outcomes: list[Outcome] = []
    for done, statement in enumerate(statements):
        try:
            statement.apply(target.collection)
            outcome = WRITTEN
        except OperationFailure as exc:  # this statement's own answer
            outcome = _statement_outcome(target, statement, exc)
        except UNENCODABLE:
            raise
        except PyMongoError as exc:
            fail_bulk(exc)
        outcomes.append(outcome)
        if ordered and not outcome.settled:
            return outcomes + [AFTER_FAILURE] * (len(statements) - done - 1)
    return outcomes


def failed_updates_readable(collection: Collection[Document]) -> bool:
    """Evidence, from the server itself, that an unordered bulk of upserts in which one
    statement fails is answered per statement and goes on past the failure (MongoDB), or
    not (FerretDB 1.24: its reply cannot be read, and what followed was not applied).
    Writes and removes two documents in `collection` (the pipeline's own)."""
    stored, other = PROBE_ID_PREFIX + uuid.uuid4().hex, PROBE_ID_PREFIX + uuid.uuid4().hex
    collection.insert_one({"_id": stored, "v": 1})
    refused = UpdateOne({"_id": stored, "v": {"$lt": 0}}, {"$set": {"v": 0}}, upsert=True)
    applied = UpdateOne({"_id": other}, {"$set": {"v": 1}}, upsert=True)
    try:
        collection.bulk_write([refused, applied], ordered=False)
        return False  # the refused statement was not reported
    except BulkWriteError as exc:
        indexes = [e.get("index") for e in exc.details.get("writeErrors", [])]
        return indexes == [0] and collection.find_one({"_id": other}) is not None
    except UNREADABLE_REPLY:
        return False
    finally:
        collection.delete_many({"_id": {"$in": [stored, other]}})


def _statement_outcome(target: Target, statement: Statement, exc: OperationFailure) -> Outcome:
    details = exc.details or {}
    if exc.code in DUPLICATE_KEY_CODES:
        return _duplicate_key(target, statement, details)
    if about_the_server(exc.code, exc.has_error_label("RetryableWriteError")):
        raise SinkUnavailable(f"MongoDB: {server_reason(exc.code, details, str(exc))}") from exc
    return rejected(server_reason(exc.code, details, str(exc)))


def _duplicate_key(target: Target, statement: Statement, error: Mapping[str, Any]) -> Outcome:
    return outcome_of(explain(target.collection, statement, error, target.indexes), target.same_id)


def _outcomes(
    target: Target, statements: Sequence[Statement], details: Mapping[str, Any], *, ordered: bool
) -> list[Outcome]:
    """Per-statement outcomes of a BulkWriteError's reply."""
    errors = details.get("writeErrors") or []
    if not all(isinstance(e, Mapping) and isinstance(e.get("index"), int) for e in errors):
        return one_at_a_time(target, statements, ordered=ordered)  # cannot tell whose
    if details.get("writeConcernErrors"):
        # Written on the primary, not acknowledged as asked: the cluster's trouble, not the
        # records'. Written again later, they collapse as duplicates.
        raise SinkUnavailable(f"MongoDB: write concern not satisfied: {_first(details)}")
    outcomes: list[Outcome] = [WRITTEN] * len(statements)
    failed_at = len(statements)
    for error in errors:
        index, code = int(error["index"]), int(error.get("code") or 0)
        failed_at = min(failed_at, index)
        if code in DUPLICATE_KEY_CODES:
            outcomes[index] = _duplicate_key(target, statements[index], error)
        elif about_the_server(code, False):
            outcomes[index] = retry(server_reason(code, error, ""))
        else:
            outcomes[index] = rejected(server_reason(code, error, ""))
    if ordered:  # an ordered bulk stops at its first error: what follows was never tried
        for index in range(failed_at + 1, len(outcomes)):
            outcomes[index] = AFTER_FAILURE
    return outcomes


def _first(details: Mapping[str, Any]) -> str:
    errors = details.get("writeConcernErrors") or [{}]
    first = errors[0] if isinstance(errors[0], Mapping) else {}
    return str(first.get("errmsg") or first.get("codeName") or "no detail")[:200]
