"""The whole consumer over the in-memory queue and sink."""

from __future__ import annotations

import threading
import time

from bson import ObjectId

from ingest.cli.options import service_options
from ingest.metrics import Metrics
from ingest.pipeline.jobs import report_depth
from ingest.pipeline.service import Service
from ingest.queues.base import REASON_ATTRIBUTE
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.memory import MemorySink
from producer import wire


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


def test_outage_pauses_receiving_then_resumes_without_dead_letters() -> None:
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead, max_receive_count=3)
    ids = fill(queue, 20, 10)
    sink = MemorySink()
    sink.unavailable = True
    service = Service(service_options(settings(exit_when_idle=None)), {queue.url: queue}, sink)
    service.start()
    time.sleep(1.5)
    calls_during_outage = queue.receive_calls
    time.sleep(1.5)
    # Paused: at most a stray receive while the breaker opened, never a stream of them.
    assert queue.receive_calls - calls_during_outage <= 2
    assert len(dead) == 0
    sink.unavailable = False
    deadline = time.monotonic() + 10
    while sink.count() < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    service.stop()
    assert sink.count() == len(ids) and len(dead) == 0 and len(queue) == 0


def test_stop_hands_back_what_was_not_started() -> None:
    queue = MemoryQueue(url="memory://q")
    fill(queue, 50, 1)
    release_gate = threading.Event()

    class SlowSink(MemorySink):
        def write(self, records):  # type: ignore[no-untyped-def]
            release_gate.wait(2)
            return super().write(records)

    sink = SlowSink()
    service = Service(
        service_options(settings(exit_when_idle=None, writers=1, max_messages=1)),
        {queue.url: queue},
        sink,
    )
    service.start()
    time.sleep(0.5)
    release_gate.set()
    service.stop(deadline_seconds=5)
    # Whatever was written is deleted; everything else is visible again at once.
    assert len(queue) == 50 - sink.count()
    assert queue.depth().in_flight == 0


def test_report_depth_sets_the_dead_letter_gauge() -> None:
    """What the service's queue-depth job (every 10 s) sets: the dashboard's and the
    alerts' dead-letter depth, per source queue."""
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead)
    plain = MemoryQueue(url="memory://plain")
    for n in range(2):
        dead.send(f"dead-{n}")
    queue.send("waiting")
    metrics = Metrics()
    report_depth({queue.url: queue, plain.url: plain}, metrics)
    registry = metrics.registry
    assert registry.get_sample_value("ingest_dead_letter_messages", {"queue": queue.url}) == 2
    assert registry.get_sample_value("ingest_queue_visible_messages", {"queue": queue.url}) == 1
    # No dead-letter queue: no series (not a misleading 0).
    assert registry.get_sample_value("ingest_dead_letter_messages", {"queue": plain.url}) is None
