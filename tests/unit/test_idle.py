"""--exit-when-idle (ingest/pipeline/idle.py): the service stops once nothing has been
received, written or held for the idle time, and the queues hold nothing visible."""

from __future__ import annotations

import threading

from ingest.errors import QueueUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.idle import IdleWatch
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.receive import ReceiveOptions, ReceiveStage, Wiring
from ingest.pipeline.write import BatchWriter, WriteStage
from ingest.queues.base import Message, QueueDepth
from ingest.queues.memory import MemoryQueue
from ingest.sinks.memory import MemorySink


class Consumer:
    """The stages IdleWatch looks at, built but not started, and the stops it asked for."""

    def __init__(self, idle_seconds: float, queue: MemoryQueue | None = None) -> None:
        self.queue = queue or MemoryQueue("memory://q")
        self.inbox, self.inflight = Inbox(4), InFlight()
        wiring = Wiring(self.inbox, Outbox(), self.inflight, SinkBreaker(), Metrics(),
                        ReceiveOptions(wait_seconds=0))  # fmt: skip
        self.receive = ReceiveStage({self.queue.url: self.queue}, wiring, 1)
        writer = BatchWriter(MemorySink(), Metrics(), SinkBreaker())
        self.write = WriteStage(self.inbox, Outbox(), writer, 1)
        self.stops: list[int] = []
        self.watch = IdleWatch(idle_seconds, {self.queue.url: self.queue}, self.receive,
                               self.inbox, self.write, self.inflight,
                               lambda: self.stops.append(1))  # fmt: skip


def test_an_idle_consumer_with_empty_queues_stops() -> None:
    consumer = Consumer(idle_seconds=0)
    assert consumer.watch.is_idle()
    consumer.watch.check()
    assert consumer.stops == [1]


def test_a_consumer_that_holds_receives_or_has_work_waiting_does_not_stop() -> None:
    held = Consumer(idle_seconds=0)
    held.inflight.admit([Message("memory://q", "m", "r", "")])
    waiting = Consumer(idle_seconds=0)
    assert waiting.inbox.put([Message("memory://q", "m", "r", "")], threading.Event(),
                             lambda: None) == []  # fmt: skip
    receiving = Consumer(idle_seconds=0)
    receiving.receive.pollers[0].last_received_count = 10
    for busy in (held, waiting, receiving):
        assert not busy.watch.is_idle()
        busy.watch.check()
        assert busy.stops == []


def test_it_does_not_stop_before_the_idle_time() -> None:
    consumer = Consumer(idle_seconds=3600)
    consumer.watch.check()
    assert consumer.watch.is_idle() and consumer.stops == []


def test_visible_messages_keep_it_running_however_slow_the_pollers() -> None:
    queue = MemoryQueue("memory://q")
    queue.send("not received yet")
    consumer = Consumer(idle_seconds=0, queue=queue)
    consumer.watch.check()
    assert consumer.watch.is_idle() and consumer.stops == []


def test_a_queue_that_does_not_answer_does_not_keep_it_running() -> None:
    class Down(MemoryQueue):
        def depth(self) -> QueueDepth:
            raise QueueUnavailable("SQS GetQueueAttributes: no answer")

    consumer = Consumer(idle_seconds=0, queue=Down("memory://q"))
    consumer.watch.check()
    assert consumer.stops == [1]
