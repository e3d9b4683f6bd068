"""A message at its last receive never goes to SQS's own redrive (which would move it
without a reason, good records and all): the consumer settles it itself."""

from __future__ import annotations

from bson import ObjectId

from ingest.flow.breaker import SinkBreaker
from ingest.flow.retry import RetryPolicy
from ingest.metrics import Metrics
from ingest.pipeline.ack import Acknowledger
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.messages import Settlement
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import REASON_ATTRIBUTE
from ingest.queues.memory import MemoryQueue
from ingest.sinks.base import Outcome, retry
from ingest.sinks.memory import MemorySink
from producer import wire

MAX_RECEIVES = 3


def queues() -> tuple[MemoryQueue, MemoryQueue]:
    dead = MemoryQueue(url="memory://dlq")
    return MemoryQueue(
        url="memory://q", max_receive_count=MAX_RECEIVES, dead_letter_queue=dead
    ), dead


def ack(queue: MemoryQueue) -> Acknowledger:
    return Acknowledger({queue.url: queue}, InFlight(), Metrics(), RetryPolicy(0, 0, 0))


def receive_until_last(queue: MemoryQueue) -> list:  # type: ignore[type-arg]
    for _ in range(MAX_RECEIVES - 1):
        got = queue.receive(10, 0, 30)
        queue.change_visibility([(m, 0) for m in got])
    last = queue.receive(10, 0, 30)
    assert last and all(m.last_receive for m in last)
    return last


class AlwaysRetry(MemorySink):
    def _write_one(self, record: wire.Record) -> Outcome:
        if record.document.get("flaky"):
            return retry("write conflict (error 112)")
        return super()._write_one(record)


def test_records_still_failing_at_the_last_receive_are_dead_lettered_with_the_reason() -> None:
    queue, dead = queues()
    good, flaky = ObjectId(), ObjectId()
    lines = [
        wire.encode_record("e", {"_id": good}),
        wire.encode_record("e", {"_id": flaky, "flaky": 1}),
    ]
    queue.send("\n".join(lines))
    sink = AlwaysRetry()
    stage = BatchWriter(sink, Metrics(), SinkBreaker())
    for _ in range(MAX_RECEIVES - 1):  # before the last receive: back to the queue
        got = queue.receive(10, 0, 30)
        settlement = stage.process(got)
        assert settlement.retry == got and not settlement.dead_letters
        ack(queue).apply(settlement)
    last = queue.receive(10, 0, 30)
    assert last[0].last_receive
    ack(queue).apply(stage.process(last))
    (letter,) = dead._messages.values()
    reason = wire.attribute_value(letter.attributes, REASON_ATTRIBUTE)
    assert reason == f"still failing after {MAX_RECEIVES} receives: write conflict (error 112)"
    assert str(flaky) in letter.body and str(good) not in letter.body
    assert sink.count() == 1 and len(queue) == 0


def test_a_message_released_at_its_last_receive_is_requeued_not_redriven() -> None:
    queue, dead = queues()
    queue.send("a record line")
    last = receive_until_last(queue)
    ack(queue).apply(Settlement(release=last))  # e.g. MongoDB went down, or shutdown
    again = queue.receive(10, 0, 30)
    assert [m.body for m in again] == ["a record line"] and again[0].receive_count == 1
    assert again[0].message_id != last[0].message_id
    assert len(dead) == 0 and len(queue) == 1


def test_released_messages_before_their_last_receive_just_turn_visible() -> None:
    queue, _ = queues()
    queue.send("body")
    first = queue.receive(10, 0, 30)
    ack(queue).apply(Settlement(release=first))
    again = queue.receive(10, 0, 30)
    assert again[0].message_id == first[0].message_id and again[0].receive_count == 2
