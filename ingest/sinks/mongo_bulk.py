"""Bulk writes and their per-record outcomes: one unordered bulk, ordered bulks that
resume after a settled failure, and single statements for what FerretDB cannot take
in a bulk (see mongo_guards.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from ingest.sinks.base import DUPLICATE, WRITTEN, Outcome, OutcomeKind, rejected, retry
from ingest.sinks.isolation import AFTER_FAILURE
from ingest.sinks.modes import Document, GuardedWrite
from ingest.sinks.mongo_errors import (
    DUPLICATE_KEY_CODES,
    ENVIRONMENT_CODES,
    TRANSIENT_CODES,
    UNENCODABLE,
    apply_write_errors,
    classify_failure,
    server_reason,
)


def bulk(
    collection: Collection[Document],
    ops: list[Any],
    *,
    on_duplicate: Outcome = DUPLICATE,
    ordered: bool = False,
) -> list[Outcome]:
    """One bulk write; per-op outcomes (see mongo_errors for a bulk failed as a whole)."""
    outcomes: list[Outcome] = [WRITTEN] * len(ops)
    try:
        collection.bulk_write(ops, ordered=ordered)
    except BulkWriteError as exc:
        apply_write_errors(exc.details, outcomes, on_duplicate, ordered=ordered)
    except UNENCODABLE:
        raise
    except PyMongoError as exc:
        return classify_failure(exc, len(ops))
    return outcomes


def in_order(collection: Collection[Document], ops: Sequence[Any]) -> list[Outcome]:
    """Ordered bulks; a permanent error skips only its op, a transient one stops."""
    results: list[Outcome] = []
    remaining = list(ops)
    while remaining:
        outcomes = bulk(collection, remaining, ordered=True)
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
    collection: Collection[Document], writes: Sequence[GuardedWrite], *, ordered: bool
) -> list[Outcome]:
    """Each write as a statement of its own, in order; ordered: stop at a retry."""
    outcomes: list[Outcome] = []
    for done, write in enumerate(writes):
        try:
            write.apply(collection)
            outcome = WRITTEN
        except OperationFailure as exc:  # this statement's own answer
            outcome = statement_outcome(exc)
        except UNENCODABLE:
            raise
        except PyMongoError as exc:
            return outcomes + classify_failure(exc, len(writes) - done)
        outcomes.append(outcome)
        if ordered and not outcome.settled:
            return outcomes + [AFTER_FAILURE] * (len(writes) - done - 1)
    return outcomes


def statement_outcome(exc: OperationFailure) -> Outcome:
    if exc.code in DUPLICATE_KEY_CODES:
        return DUPLICATE
    reason = server_reason(exc.code, exc.details or {}, str(exc))
    if exc.code in TRANSIENT_CODES or exc.code in ENVIRONMENT_CODES:
        return retry(reason)
    return rejected(reason)
