"""The service (ingest/pipeline/service.py): the whole consumer, its stages wired,
over the in-memory queue and sink: drained once, paused during an outage, stopped
handing back what it holds."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from bson import ObjectId

from ingest.cli.options import service_options
from ingest.pipeline.receive import Poller
from ingest.pipeline.service import Service
from ingest.queues.base import REASON_ATTRIBUTE
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.memory import MemorySink
from producer import wire
from tests.support.waiting import wait_until


def fill(queue: MemoryQueue, messages: int, per_message: int) -> set[ObjectId]:
    ids: set[ObjectId] = set()
    for _ in range(messages):
        lines = []
        for _ in range(per_message):
            oid = ObjectId()
            ids.add(oid)
            lines.append(wire.encode_record("events", {"_id": oid}))
        queue.send("\n".join(lines), wire.message_attributes(wire.IDENTITY, per_message))
    return ids


def settings(**overrides: object) -> Settings:
    base = dict(queue_urls=("memory://q",), wait_seconds=0, metrics_port=0, exit_when_idle=0.3)
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def run(service: Service, timeout: float = 20) -> None:
    service.start()
    assert service.wait(timeout), "service did not go idle"
    service.stop()


def test_drains_everything_once_and_dead_letters_poison() -> None:
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead)
    ids = fill(queue, 200, 25)
    queue.send("poison")
    sink = MemorySink()
    run(Service(service_options(settings()), {queue.url: queue}, sink))
    assert sink.count("events") == len(ids) == 5000
    assert len(queue) == 0
    reasons = [
        wire.attribute_value(m.attributes, REASON_ATTRIBUTE) for m in dead._messages.values()
    ]
    assert len(reasons) == 1 and "not valid JSON" in str(reasons[0])


def test_redelivered_messages_collapse_into_one_document() -> None:
    queue = MemoryQueue(url="memory://q")
    lines = [wire.encode_record("events", {"_id": ObjectId()}) for _ in range(10)]
    for _ in range(3):  # the producer retried: the same records in three messages
        queue.send("\n".join(lines))
    sink = MemorySink()
    service = Service(service_options(settings()), {queue.url: queue}, sink)
    run(service)
    assert sink.count("events") == 10
    assert service.metrics.records_duplicate._value.get() == 20


@pytest.mark.timeout(120)
def test_outage_pauses_receiving_then_resumes_without_dead_letters() -> None:
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead, max_receive_count=3)
    ids = fill(queue, 20, 10)
    sink = MemorySink()
    sink.unavailable = True
    service = Service(service_options(settings(exit_when_idle=None)), {queue.url: queue}, sink)
    service.start()
    try:
        assert wait_until(lambda: service.breaker.is_open)
        calls_during_outage = queue.receive_calls
        # Each poller goes round its paused loop (a wait on the breaker) three times more:
        # long enough for a poller that did not pause to receive again and again.
        assert wait_until(went_round(service.receive.pollers, times=3))
        # Paused: at most a stray receive per poller as the breaker opened, never a stream.
        assert queue.receive_calls - calls_during_outage <= len(service.receive.pollers)
        assert len(dead) == 0
        sink.unavailable = False
        assert wait_until(lambda: sink.count() == len(ids))
    finally:
        service.stop()
    assert sink.count() == len(ids) and len(dead) == 0 and len(queue) == 0


def went_round(pollers: list[Poller], times: int) -> Callable[[], bool]:
    """A condition: every poller's loop has checked in `times` times since it was made."""
    seen: dict[int, list[float]] = {id(p): [p.last_beat] for p in pollers}

    def check() -> bool:
        for poller in pollers:
            beats = seen[id(poller)]
            if poller.last_beat != beats[-1]:
                beats.append(poller.last_beat)
        return all(len(beats) > times for beats in seen.values())

    return check


@pytest.mark.timeout(60)
def test_stop_hands_back_what_was_not_started() -> None:
    queue = MemoryQueue(url="memory://q")
    fill(queue, 50, 1)
    writing = threading.Event()
    release_gate = threading.Event()

    class SlowSink(MemorySink):
        def write(self, records):  # type: ignore[no-untyped-def]
            writing.set()
            release_gate.wait(10)
            return super().write(records)

    sink = SlowSink()
    service = Service(
        service_options(settings(exit_when_idle=None, writers=1, max_messages=1)),
        {queue.url: queue},
        sink,
    )
    service.start()
    try:
        # The one writer is busy and the pollers have filled the inbox behind it.
        assert writing.wait(10)
        behind = 1 + service.options.inbox_batches  # the batch being written, a full inbox
        assert wait_until(lambda: len(service.inflight) >= behind)
    finally:
        release_gate.set()
        service.stop(deadline_seconds=5)
    # Whatever was written is deleted; everything else is visible again at once.
    assert sink.count() >= 1
    assert len(queue) == 50 - sink.count()
    assert queue.depth().in_flight == 0 and len(service.inflight) == 0
