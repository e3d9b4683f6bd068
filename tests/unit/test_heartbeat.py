"""The visibility heartbeat (ingest/pipeline/heartbeat.py): a held message about to turn
visible is extended by a timeout; one SQS would not extend is left as it is; a failed
call extends nothing and raises nothing."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ingest.errors import QueueUnavailable
from ingest.metrics import Metrics
from ingest.pipeline.heartbeat import VisibilityHeartbeat
from ingest.pipeline.inflight import InFlight
from ingest.queues.base import Message
from ingest.queues.memory import MemoryQueue


class Flaky(MemoryQueue):
    down = False  # True: SQS does not answer

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]:
        if self.down:
            raise QueueUnavailable("SQS ChangeMessageVisibilityBatch: no answer")
        return super().change_visibility(entries)


def extended(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("ingest_visibility_extended_total") or 0.0


def held_messages(queue: MemoryQueue, count: int) -> tuple[InFlight, list[Message]]:
    for n in range(count):
        queue.send(f"m{n}")
    received = queue.receive(10, 0, 30)
    inflight = InFlight()
    inflight.admit(received)
    return inflight, received


def test_only_messages_turning_visible_within_half_a_timeout_are_extended() -> None:
    queue = MemoryQueue("memory://q")
    inflight, (soon, _later) = held_messages(queue, 2)
    soon.visible_until = time.monotonic() + 10  # within 15 s of turning visible
    metrics = Metrics()
    heartbeat = VisibilityHeartbeat({queue.url: queue}, inflight, 30, metrics)
    before = time.monotonic()
    heartbeat.beat()
    assert extended(metrics) == 1
    assert soon.visible_until >= before + 30 and queue.depth().in_flight == 2
    assert heartbeat.interval == 5.0  # a sixth of the timeout
    assert VisibilityHeartbeat({}, inflight, 3, metrics).interval == 1.0  # at least a second


def test_a_message_sqs_would_not_extend_is_not_counted_nor_moved() -> None:
    queue = MemoryQueue("memory://q")
    inflight, (stale,) = held_messages(queue, 1)
    queue.delete([stale])  # e.g. deleted meanwhile: its handle no longer works
    stale.visible_until = deadline = time.monotonic() + 1
    metrics = Metrics()
    VisibilityHeartbeat({queue.url: queue}, inflight, 30, metrics).beat()
    assert extended(metrics) == 0 and stale.visible_until == deadline


def test_a_failed_heartbeat_extends_nothing_and_the_next_one_tries_again() -> None:
    queue = Flaky("memory://q")
    queue.down = True
    inflight, (message,) = held_messages(queue, 1)
    message.visible_until = deadline = time.monotonic() + 1
    metrics = Metrics()
    heartbeat = VisibilityHeartbeat({queue.url: queue}, inflight, 30, metrics)
    heartbeat.beat()  # logged, not raised
    assert extended(metrics) == 0 and message.visible_until == deadline
    queue.down = False  # SQS answers again
    heartbeat.beat()
    assert extended(metrics) == 1 and message.visible_until > deadline
