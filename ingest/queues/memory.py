"""The queue seam in memory: SQS's semantics that matter here (visibility timeout,
receive counts, redrive after maxReceiveCount, receipt handles that change on
redelivery), for unit tests and for measuring the pipeline's own overhead."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import QueueRefused
from ingest.queues.base import (
    MAX_DELAY_SECONDS,
    DeadLetter,
    Message,
    MoveTask,
    Outgoing,
    QueueDepth,
    Resend,
    dead_letter_attributes,
    dead_letter_name,
    sendable_attributes,
)


@dataclass(slots=True)
class _Stored:
    message_id: str
    body: str
    attributes: Mapping[str, Any]
    group_id: str | None = None
    receipt: str = ""
    receive_count: int = 0
    visible_at: float = 0.0
    sent_at: float = field(default_factory=time.time)


@dataclass(eq=False)
class MemoryQueue:
    url: str = "memory://queue"
    max_receive_count: int = 0  # 0: never redrive
    dead_letter_queue: MemoryQueue | None = None
    _messages: dict[str, _Stored] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    receive_calls: int = 0

    @property
    def dead_letter_url(self) -> str | None:
        return self.dead_letter_queue.url if self.dead_letter_queue is not None else None

    def send(
        self,
        body: str,
        attributes: Mapping[str, Any] | None = None,
        group_id: str | None = None,
        *,
        delay_seconds: int = 0,
    ) -> str:
        with self._cond:
            message_id = f"m-{next(self._ids)}"
            stored = _Stored(message_id, body, dict(attributes or {}), group_id)
            stored.visible_at = time.monotonic() + delay_seconds if delay_seconds else 0.0
            self._messages[message_id] = stored
            self._cond.notify_all()
            return message_id

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Outgoing]:
        for message in messages:
            self.send(
                message.body, message.attributes, message.group_id,
                delay_seconds=message.delay_seconds,
            )  # fmt: skip
        return []

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]:
        deadline = time.monotonic() + wait_seconds
        with self._cond:
            self.receive_calls += 1
            while True:
                got = self._take(max_messages, visibility_timeout)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                self._cond.wait(min(remaining, 0.05))

    def _take(self, max_messages: int, visibility_timeout: int) -> list[Message]:
        now = time.monotonic()
        got: list[Message] = []
        for stored in list(self._messages.values()):
            if len(got) == max_messages:
                break
            if stored.visible_at > now:
                continue
            if self.max_receive_count and stored.receive_count >= self.max_receive_count:
                self._redrive(stored)
                continue
            stored.receive_count += 1
            stored.receipt = uuid.uuid4().hex
            stored.visible_at = now + visibility_timeout
            got.append(self._message(stored))
        return got

    def _message(self, stored: _Stored) -> Message:
        return Message(
            queue_url=self.url,
            message_id=stored.message_id,
            receipt_handle=stored.receipt,
            body=stored.body,
            attributes=stored.attributes,
            receive_count=stored.receive_count,
            group_id=stored.group_id,
            sent_at=stored.sent_at,
            visible_until=stored.visible_at,
            max_receive_count=self.max_receive_count,
        )

    def _redrive(self, stored: _Stored) -> None:
        """SQS's own move after maxReceiveCount: no reason attached."""
        del self._messages[stored.message_id]
        if self.dead_letter_queue is not None:
            self.dead_letter_queue.send(stored.body, stored.attributes, stored.group_id)

    def _current(self, message: Message) -> _Stored | None:
        stored = self._messages.get(message.message_id)
        return stored if stored is not None and stored.receipt == message.receipt_handle else None

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        failed: list[Message] = []
        with self._cond:
            for message in messages:
                if self._current(message) is None:
                    failed.append(message)
                else:
                    del self._messages[message.message_id]
        return failed

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]:
        failed: list[Message] = []
        with self._cond:
            now = time.monotonic()
            for message, seconds in entries:
                stored = self._current(message)
                if stored is None:
                    failed.append(message)
                else:
                    stored.visible_at = now + seconds
            self._cond.notify_all()
        return failed

    def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        if self.dead_letter_queue is None:
            return list(letters)
        for letter in letters:
            attributes = dead_letter_attributes(letter)
            self.dead_letter_queue.send(letter.body, attributes, letter.source.group_id)
        return []

    def resend(self, resends: Sequence[Resend]) -> list[Resend]:
        fifo = self.url.endswith(".fifo")
        for resend in resends:
            delay = 0 if fifo else min(MAX_DELAY_SECONDS, resend.delay_seconds)
            self.send(resend.body, resend.attributes, resend.source.group_id, delay_seconds=delay)
        return []

    def depth(self) -> QueueDepth:
        with self._cond:
            now = time.monotonic()
            in_flight = sum(1 for s in self._messages.values() if s.visible_at > now)
            return QueueDepth(len(self._messages) - in_flight, in_flight, 0)

    def dead_letter_depth(self) -> QueueDepth | None:
        return self.dead_letter_queue.depth() if self.dead_letter_queue is not None else None

    def purge(self) -> None:
        with self._cond:
            self._messages.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._messages)


class MemoryService:
    """Queues by URL, as `ingest init` creates them; moves happen at once."""

    def __init__(self) -> None:
        self.queues: dict[str, MemoryQueue] = {}
        self._moves: dict[str, MoveTask] = {}

    def queue(self, url: str, dead_letter_url: str | None = None) -> MemoryQueue:
        found = self.queues.get(url)
        if found is None:
            raise QueueRefused(f"memory queue {url}: no such queue")
        if dead_letter_url is not None:
            found.dead_letter_queue = self.queue(dead_letter_url)
        return found

    def create(
        self,
        name: str,
        *,
        visibility_timeout: int = 30,
        max_receive_count: int = 5,
        retention_seconds: int = 1209600,
        kms_key_id: str | None = None,
    ) -> MemoryQueue:
        dead_url = f"memory://{dead_letter_name(name)}"
        dead = self.queues.setdefault(dead_url, MemoryQueue(dead_url))
        queue = self.queues.setdefault(f"memory://{name}", MemoryQueue(f"memory://{name}"))
        queue.max_receive_count, queue.dead_letter_queue = max_receive_count, dead
        return queue

    def start_move(self, source_url: str, destination_url: str) -> str:
        source, destination = self.queue(source_url), self.queue(destination_url)
        moved = 0
        for message in source.receive(10**6, 0, 0):
            kept = sendable_attributes(message.attributes)
            destination.send(message.body, kept, message.group_id)
            source.delete([message])
            moved += 1
        handle = f"move-{len(self._moves)}"
        self._moves[handle] = MoveTask(handle, "COMPLETED", moved)
        return handle

    def move_status(self, source_url: str, handle: str) -> MoveTask:
        return self._moves[handle]
