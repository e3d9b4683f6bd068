"""Receive stage: pollers long-poll the queue and hand batches on through a bounded inbox.

The inbox bound is the back-pressure: when writers fall behind, `put` blocks and
the pollers stop receiving, so messages never sit received and unwritten."""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ingest.breaker import SinkBreaker
from ingest.errors import QueueUnavailable
from ingest.inflight import InFlight
from ingest.messages import Message
from ingest.metrics import Metrics
from ingest.queue import MessageQueue
from producer import wire

log = logging.getLogger(__name__)

PARTITION_ATTRIBUTE = wire.PARTITION_ATTRIBUTE


class Inbox:
    """The bounded hand-off from pollers to writers.

    With one lane every writer takes from it. Partitioned, each writer has its own
    lane and a message goes to the lane of its partition key (the attribute
    `ingest-partition-key`, else its FIFO group), so one key's records are written
    by one writer in arrival order, as mq-go's partitioned processor does."""

    def __init__(self, maxsize: int, lanes: int = 1) -> None:
        per_lane = max(1, maxsize // lanes)
        self._lanes: list[queue.Queue[list[Message]]] = [
            queue.Queue(maxsize=per_lane) for _ in range(lanes)
        ]

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def put(self, messages: list[Message], stopping: threading.Event) -> list[Message]:
        """Blocks while a lane is full; returns what could not be placed before stopping."""
        groups = self._split(messages)
        for position, (lane, group) in enumerate(groups):
            while True:
                if stopping.is_set():
                    return [m for _, rest in groups[position:] for m in rest]
                try:
                    self._lanes[lane].put(group, timeout=0.5)
                    break
                except queue.Full:
                    continue
        return []

    def _split(self, messages: list[Message]) -> list[tuple[int, list[Message]]]:
        if len(self._lanes) == 1:
            return [(0, messages)]
        lanes: dict[int, list[Message]] = {}
        for message in messages:
            lane = zlib.crc32(_partition_key(message).encode()) % len(self._lanes)
            lanes.setdefault(lane, []).append(message)
        return sorted(lanes.items())

    def get(self, lane: int, timeout: float) -> list[Message]:
        """Raises queue.Empty after `timeout`."""
        return self._lanes[lane % len(self._lanes)].get(timeout=timeout)

    def get_nowait(self, lane: int) -> list[Message]:
        return self._lanes[lane % len(self._lanes)].get_nowait()

    def drain(self) -> list[Message]:
        drained: list[Message] = []
        for lane in self._lanes:
            while True:
                try:
                    drained.extend(lane.get_nowait())
                except queue.Empty:
                    break
        return drained

    def empty(self) -> bool:
        return all(lane.empty() for lane in self._lanes)

    def full(self) -> bool:
        return any(lane.full() for lane in self._lanes)


def _partition_key(message: Message) -> str:
    return (
        wire.attribute_value(message.attributes, PARTITION_ATTRIBUTE)
        or message.group_id
        or message.message_id
    )


@dataclass(frozen=True, slots=True)
class ReceiveOptions:
    max_messages: int = 10
    wait_seconds: int = 20
    visibility_timeout: int = 30


class Poller:
    def __init__(
        self,
        source: MessageQueue,
        inbox: Inbox,
        inflight: InFlight,
        breaker: SinkBreaker,
        metrics: Metrics,
        options: ReceiveOptions,
        release: Callable[[list[Message]], None],
        pace: Callable[[float], int] | None = None,
    ) -> None:
        self._source = source
        self._inbox = inbox
        self._inflight = inflight
        self._breaker = breaker
        self._metrics = metrics
        self._options = options
        self._release = release
        self._pace = pace  # the write ceiling's hint: how many messages the writers can use
        self.stopping = threading.Event()
        self.last_received_count = 0

    @property
    def source(self) -> MessageQueue:
        return self._source

    def run(self) -> None:
        self._metrics.pollers_running.inc()
        try:
            backoff = 0.5
            while not self.stopping.is_set():
                if not self._breaker.wait_closed(timeout=1.0):
                    continue  # MongoDB is down: receiving would only burn receive counts
                wanted = self._options.max_messages
                if self._pace is not None:
                    wanted = min(wanted, self._pace(1.0))
                    if not wanted:
                        continue  # under the ceiling: don't hold what the writers can't use yet
                try:
                    self.poll_once(wanted)
                    backoff = 0.5
                except QueueUnavailable as exc:
                    self._metrics.receive_errors.inc()
                    log.warning("receive failed, retrying in %.1fs: %s", backoff, exc)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self._metrics.pollers_running.dec()

    def poll_once(self, max_messages: int | None = None) -> int:
        o = self._options
        count = max_messages or o.max_messages
        messages = self._source.receive(count, o.wait_seconds, o.visibility_timeout)
        self.last_received_count = len(messages)
        if not messages:
            return 0
        self._metrics.messages_received.inc(len(messages))
        fresh, repeats = self._inflight.admit(messages)
        self._metrics.duplicate_deliveries.inc(repeats)
        if fresh:
            self._hand_on(fresh)
        return len(fresh)

    def _hand_on(self, messages: list[Message]) -> None:
        unplaced = self._inbox.put(messages, self.stopping)
        if unplaced:
            self._release(unplaced)  # shutting down: let another consumer have them now
