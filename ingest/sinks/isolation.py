"""Finding the records a store refuses for a whole bulk, by bisection.

A store may fail a whole bulk for one record in it: FerretDB answers an insert
holding a NUL character in a string with one error for the whole command, and
drops the connection on a Decimal128. The server still answers, so this is not
an outage: the bulk is split in halves, and halves of halves, until the records
that fail alone are found; each is rejected with the store's own reason, and the
rest are written. A bulk with k such records among n costs about 2k·log2(n)
extra writes; writing every record alone would cost n. Measured on the local
stack (`python -m bench.isolation`, 300 records of 1 KB): with one refused record
bisection took 0.49-0.99 s against 1.22-1.78 s alone; with five, 1.5 s against
1.1-1.3 s. One bad record in a batch is the usual case, so bisection it is.

Writes are idempotent by _id, so re-writing a half that was partly applied
before the failure only turns some records into duplicates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ingest.errors import SinkUnavailable
from ingest.sinks.base import AFTER_FAILURE, Outcome, rejected

T = TypeVar("T")


class BulkRefused(Exception):
    """The store failed a whole bulk. `connection_lost`: it hung up rather than
    answering with an error, so whether it still answers must be checked."""

    def __init__(self, reason: str, *, connection_lost: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection_lost = connection_lost


def bisect(
    items: Sequence[T],
    write: Callable[[Sequence[T]], list[Outcome]],
    alone: Callable[[Sequence[T], Exception], Outcome],
    catch: tuple[type[Exception], ...],
    *,
    ordered: bool = False,
) -> list[Outcome]:
    """`write(items)`, and when it raises one of `catch`, the same on each half, down to
    single items, whose outcome `alone` gives. An outage (SinkUnavailable) is never split:
    it is nobody's fault and goes up as it is. Ordered: after an item that must be
    retried, the rest are not written (they come back as retries)."""
    if not items:
        return []
    try:
        return write(items)
    except SinkUnavailable:
        raise
    except catch as exc:
        if len(items) == 1:
            return [alone(items, exc)]
    half = len(items) // 2
    first = bisect(items[:half], write, alone, catch, ordered=ordered)
    if ordered and any(not outcome.settled for outcome in first):
        return first + [AFTER_FAILURE] * (len(items) - half)
    return first + bisect(items[half:], write, alone, catch, ordered=ordered)


def isolate(
    records: Sequence[T],
    write: Callable[[Sequence[T]], list[Outcome]],
    answers: Callable[[], bool],
    *,
    ordered: bool = False,
) -> list[Outcome]:
    """`write(records)`, bisected while the store refuses a bulk as a whole.

    Raises SinkUnavailable when the store hung up and no longer answers (an outage:
    nothing is rejected)."""

    def checked(part: Sequence[T]) -> list[Outcome]:
        try:
            return write(part)
        except BulkRefused as refusal:
            if refusal.connection_lost and not answers():
                raise SinkUnavailable(f"MongoDB stopped answering: {refusal.reason}") from refusal
            raise

    def single(record: Sequence[T], exc: Exception) -> Outcome:
        assert isinstance(exc, BulkRefused)
        return _alone(record, checked, exc)

    return bisect(records, checked, single, (BulkRefused,), ordered=ordered)


def _alone(
    record: Sequence[T], write: Callable[[Sequence[T]], list[Outcome]], refusal: BulkRefused
) -> Outcome:
    """One record the store refused. A hang-up is tried once more: a connection that
    broke by chance must not cost a good record its place."""
    if not refusal.connection_lost:
        return rejected(refusal.reason)
    try:
        return write(record)[0]
    except BulkRefused as again:
        return rejected(again.reason)


def stop_after_first_retry(outcomes: list[Outcome]) -> list[Outcome]:
    """Records of other collections after a group's first retry may already be applied;
    retrying them too re-applies them after it, so the final state follows the group's order."""
    first = next((i for i, o in enumerate(outcomes) if not o.settled), None)
    if first is None:
        return outcomes
    return outcomes[: first + 1] + [
        o if not o.settled else AFTER_FAILURE for o in outcomes[first + 1 :]
    ]
