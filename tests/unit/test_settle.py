"""Settlement (ingest/pipeline/settle.py): every failure ends, within the attempt bound.

Driven end to end on the in-memory queue: the write stage, the settlement and the
acknowledge stage in a loop, as `ingest run` does, with no delays (RetryPolicy(0, 0))."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from bson import ObjectId

from ingest.flow.breaker import SinkBreaker
from ingest.flow.retry import RetryPolicy
from ingest.metrics import Metrics
from ingest.pipeline.ack import Acknowledger
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.messages import Settlement
from ingest.pipeline.settle import SettleOptions, Settler
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import ATTEMPTS_ATTRIBUTE, REASON_ATTRIBUTE, Message
from ingest.queues.memory import MemoryQueue
from ingest.sinks.base import Outcome, retry
from ingest.sinks.memory import MemorySink
from producer import wire

MAX_RECEIVES = 3
NO_DELAY = RetryPolicy(0, 0, 0)


def queues(
    *, fifo: bool = False, max_receives: int = MAX_RECEIVES
) -> tuple[MemoryQueue, MemoryQueue]:
    suffix = ".fifo" if fifo else ""
    dead = MemoryQueue(url=f"memory://dlq{suffix}")
    source = MemoryQueue(
        url=f"memory://q{suffix}", max_receive_count=max_receives, dead_letter_queue=dead
    )
    return source, dead


def settler(max_attempts: int = 0) -> Settler:
    return Settler(SettleOptions(max_attempts=max_attempts, retry=NO_DELAY))


def ack(queue: MemoryQueue) -> Acknowledger:
    return Acknowledger({queue.url: queue}, InFlight(), Metrics(), NO_DELAY)


def records(*documents: dict[str, object]) -> str:
    return "\n".join(wire.encode_record("e", document) for document in documents)


class FailsWhen(MemorySink):
    """A sink that answers RETRY, or raises, for the records `failing` picks."""

    def __init__(self, failing: Callable[[wire.Record], Outcome | Exception | None]) -> None:
        super().__init__()
        self.failing = failing
        self.attempts: dict[object, int] = {}

    def _write_one(self, record: wire.Record) -> Outcome:
        key = record.document["_id"]
        self.attempts[key] = self.attempts.get(key, 0) + 1
        verdict = self.failing(record)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict or super()._write_one(record)


def run_until_empty(queue: MemoryQueue, writer: BatchWriter, rounds: int = 50) -> int:
    """Receives, writes and acknowledges until the queue is empty; returns the receives."""
    receives = 0
    for _ in range(rounds):
        got = queue.receive(10, 0, 30)
        if not got:
            if len(queue) == 0:
                return receives
            continue
        receives += len(got)
        ack(queue).apply(writer.contained(got))
    raise AssertionError(f"{len(queue)} messages still in the queue after {rounds} rounds")


def reasons(dead: MemoryQueue) -> list[str]:
    return [
        str(wire.attribute_value(m.attributes, REASON_ATTRIBUTE)) for m in dead._messages.values()
    ]


def test_a_record_failing_every_time_is_dead_lettered_alone_after_the_bound() -> None:
    queue, dead = queues()
    good, flaky = ObjectId(), ObjectId()
    queue.send(records({"_id": good}, {"_id": flaky, "flaky": 1}))
    sink = FailsWhen(
        lambda r: retry("write conflict (error 112)") if r.document.get("flaky") else None
    )
    writer = BatchWriter(sink, Metrics(), SinkBreaker(), settler=settler())
    run_until_empty(queue, writer)
    assert reasons(dead) == [
        f"still failing after {MAX_RECEIVES} attempts: write conflict (error 112)"
    ]
    (letter,) = dead._messages.values()
    assert str(flaky) in letter.body and str(good) not in letter.body
    # The good record was written once, and only the failing one was tried again.
    assert sink.attempts == {good: 1, flaky: MAX_RECEIVES} and sink.count() == 1


def test_each_failure_resends_only_the_failing_record_with_its_attempts() -> None:
    queue, _ = queues()
    flaky = ObjectId()
    queue.send(records({"_id": ObjectId()}, {"_id": flaky, "flaky": 1}))
    writer = BatchWriter(
        FailsWhen(lambda r: retry("busy") if r.document.get("flaky") else None),
        Metrics(), SinkBreaker(), settler=settler(),
    )  # fmt: skip
    first = queue.receive(10, 0, 30)
    ack(queue).apply(writer.process(first))
    (again,) = queue.receive(10, 0, 30)
    assert again.message_id != first[0].message_id and again.receive_count == 1
    assert again.attempts == 1 and str(flaky) in again.body and again.body.count("\n") == 0


def test_an_unexpected_exception_is_contained_to_its_record_and_bounded() -> None:
    queue, dead = queues()
    ids = [ObjectId() for _ in range(9)]
    poison = ids[4]
    queue.send(records(*({"_id": i} for i in ids)))
    sink = FailsWhen(lambda r: KeyError("nModified") if r.document["_id"] == poison else None)
    writer = BatchWriter(sink, Metrics(), SinkBreaker(), settler=settler())
    run_until_empty(queue, writer)
    assert sink.count() == 8  # the neighbours are written
    assert reasons(dead) == [
        f"still failing after {MAX_RECEIVES} attempts: the consumer could not write this record:"
        " internal error in the write stage (KeyError)"
    ]


def test_an_exception_escaping_a_batch_is_contained_to_its_message() -> None:
    queue, dead = queues()
    for n in range(6):
        queue.send(records({"_id": ObjectId(), "n": n}))

    class Breaks(BatchWriter):
        def process(self, messages):  # type: ignore[no-untyped-def]
            if any('"n":3' in m.body for m in messages):
                raise RuntimeError("a bug")
            return super().process(messages)

    sink = MemorySink()
    run_until_empty(queue, Breaks(sink, Metrics(), SinkBreaker(), settler=settler()))
    assert sink.count() == 5
    (reason,) = reasons(dead)
    assert reason.startswith(f"still failing after {MAX_RECEIVES} attempts: the consumer could not")
    assert reason.endswith("internal error in the write stage (RuntimeError)")


def test_releases_are_not_attempts_even_past_the_receive_count() -> None:
    queue, dead = queues()
    queue.send(records({"_id": ObjectId(), "flaky": 1}))
    failing = FailsWhen(lambda r: retry("busy"))
    writer = BatchWriter(failing, Metrics(), SinkBreaker(), settler=settler())
    for _ in range(3 * MAX_RECEIVES):  # MongoDB down: handed back each time
        got = queue.receive(10, 0, 30)
        ack(queue).apply(writer.settler.released(got))
    assert len(dead) == 0 and len(queue) == 1 and failing.attempts == {}
    run_until_empty(queue, writer)
    assert next(iter(failing.attempts.values())) == MAX_RECEIVES
    assert reasons(dead) == [f"still failing after {MAX_RECEIVES} attempts: busy"]


def test_a_message_released_at_its_last_receive_is_resent_not_redriven() -> None:
    queue, dead = queues()
    queue.send("a record line", {ATTEMPTS_ATTRIBUTE: {"DataType": "Number", "StringValue": "2"}})
    for _ in range(MAX_RECEIVES - 1):
        got = queue.receive(10, 0, 30)
        queue.change_visibility([(m, 0) for m in got])
    last = queue.receive(10, 0, 30)
    assert last and all(m.last_receive for m in last)
    ack(queue).apply(settler().released(last))  # e.g. MongoDB went down, or shutdown
    again = queue.receive(10, 0, 30)
    assert [m.body for m in again] == ["a record line"] and again[0].receive_count == 1
    assert again[0].message_id != last[0].message_id and again[0].attempts == 2
    assert len(dead) == 0 and len(queue) == 1


def test_released_messages_before_their_last_receive_just_turn_visible() -> None:
    queue, _ = queues()
    queue.send("body")
    first = queue.receive(10, 0, 30)
    ack(queue).apply(Settlement(release=first))
    again = queue.receive(10, 0, 30)
    assert again[0].message_id == first[0].message_id and again[0].receive_count == 2


def test_fifo_retries_in_place_so_the_group_keeps_its_order() -> None:
    queue, dead = queues(fifo=True)
    queue.send(records({"_id": ObjectId(), "flaky": 1}), group_id="g")
    sink = FailsWhen(lambda r: retry("busy"))
    writer = BatchWriter(sink, Metrics(), SinkBreaker(), settler=settler())
    first = queue.receive(10, 0, 30)
    settlement = writer.process(first)
    assert [m.message_id for m, _ in settlement.retry] == [first[0].message_id]
    assert not settlement.resends and not settlement.delete_after_sends
    ack(queue).apply(settlement)
    run_until_empty(queue, writer)
    assert reasons(dead) == [f"still failing after {MAX_RECEIVES} attempts: busy"]


@pytest.mark.parametrize("limit", [1, 4])
def test_the_bound_can_be_set_apart_from_the_queue(limit: int) -> None:
    queue, dead = queues(max_receives=2)
    queue.send(records({"_id": ObjectId()}))
    sink = FailsWhen(lambda r: retry("busy"))
    run_until_empty(queue, BatchWriter(sink, Metrics(), SinkBreaker(), settler=settler(limit)))
    assert next(iter(sink.attempts.values())) == limit
    assert reasons(dead) == [f"still failing after {limit} attempts: busy"]


@pytest.mark.parametrize("raw", ["x", "-3", "", "99999999999"])
def test_an_attempt_count_that_is_not_a_small_number_counts_as_none(raw: str) -> None:
    message = Message(
        "memory://q",
        "m",
        "r",
        "b",
        {ATTEMPTS_ATTRIBUTE: {"DataType": "Number", "StringValue": raw}},
    )
    assert message.attempts == 0


def test_fifo_a_record_failing_to_the_end_lets_the_rest_of_its_group_through() -> None:
    queue, dead = queues(fifo=True)
    poison, after = ObjectId(), ObjectId()
    queue.send(records({"_id": poison, "flaky": 1}), group_id="g")
    queue.send(records({"_id": after}), group_id="g")
    sink = FailsWhen(lambda r: retry("busy") if r.document.get("flaky") else None)
    writer = BatchWriter(sink, Metrics(), SinkBreaker(), settler=settler())
    run_until_empty(queue, writer)
    # The record behind the poison one waited its turn, was never dead-lettered, and
    # was written once the poison one was given up at its last attempt.
    assert sink.attempts == {poison: MAX_RECEIVES, after: 1}
    assert sink.find("e", after) is not None
    assert reasons(dead) == [f"still failing after {MAX_RECEIVES} attempts: busy"]
