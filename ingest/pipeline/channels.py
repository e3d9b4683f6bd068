"""The hand-offs between stages: inbox (receive -> write) and outbox (-> acknowledge).

The inbox bound is the back-pressure: when writers fall behind, `put` blocks and the
pollers stop receiving, so messages never sit received and unwritten for long."""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable, Sequence

from ingest.pipeline.messages import Settlement
from ingest.pipeline.settle import Settler
from ingest.queues.base import Message
from producer import wire


class Inbox:
    """With one lane every writer takes from it. Partitioned, each writer has its own
    lane and a message goes to the lane of its partition key (the attribute
    `ingest-partition-key`, else its FIFO group), so one key's records are written
    by one writer in arrival order, as mq-go's partitioned processor does."""

    def __init__(self, maxsize: int, lanes: int = 1) -> None:
        per_lane = max(1, maxsize // lanes)
        self._lanes: list[queue.Queue[list[Message]]] = [
            queue.Queue(maxsize=per_lane) for _ in range(lanes)
        ]

    def put(
        self, messages: list[Message], stopping: threading.Event, waiting: Callable[[], None]
    ) -> list[Message]:
        """Blocks while a lane is full (calling `waiting` every half second); returns
        what could not be placed before stopping."""
        groups = self._split(messages)
        for position, (lane, group) in enumerate(groups):
            while True:
                waiting()
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
            lane = zlib.crc32(partition_key(message).encode()) % len(self._lanes)
            lanes.setdefault(lane, []).append(message)
        return sorted(lanes.items())

    def get(self, lane: int, timeout: float) -> list[Message]:
        """Raises queue.Empty after `timeout`."""
        return self._lanes[lane % len(self._lanes)].get(timeout=timeout)

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


def partition_key(message: Message) -> str:
    return message.attribute(wire.PARTITION_ATTRIBUTE) or message.group_id or message.message_id


class Outbox:
    """Settlements for the acknowledge stage; None tells one acker to stop."""

    def __init__(self, settler: Settler | None = None) -> None:
        self._queue: queue.Queue[Settlement | None] = queue.Queue()
        self._settler = settler or Settler()

    def put(self, settlement: Settlement) -> None:
        self._queue.put(settlement)

    def release(self, messages: Sequence[Message]) -> None:
        """Hand messages back, not their fault (shutting down, or MongoDB down)."""
        if messages:
            self._queue.put(self._settler.released(messages))

    def close(self, ackers: int) -> None:
        for _ in range(ackers):
            self._queue.put(None)

    def get(self) -> Settlement | None:
        return self._queue.get()
