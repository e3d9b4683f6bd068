"""The in-memory buffer between send() callers and the sender thread.

One lock guards it; send() holds it for a deque append and a few integer
updates, and wakes the sender only when a flush trigger is crossed (first
record of a linger window, or a full batch's worth of bytes)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

import bson

from . import wire
from .errors import ProducerClosed


class Item(NamedTuple):
    """One encoded record as it travels: buffer -> message -> SQS or journal."""

    record: str | bytes  # format 1: its JSON line; format 2: its BSON document
    collection: str
    size: int  # bytes it adds to a message body (before the body's encoding)
    partition_key: str | None = None
    id_key: str | None = None  # the record's _id as text, kept only for FIFO deduplication ids
    trace: str | None = None  # the W3C traceparent of the span that sent it
    operation: bool = False  # format 2: the record is an update or a delete's envelope


def as_json(item: Item) -> str:
    """The record as one line of Extended JSON, for people (callbacks, the rejected file)."""
    if isinstance(item.record, str):
        return item.record
    encode = wire.encode_operation if item.operation else wire.encode_record
    return encode(item.collection, bson.decode(item.record))


class Buffer:
    def __init__(self, max_bytes: int, full_bytes: int) -> None:
        self._lock = threading.Lock()
        self.cond = threading.Condition(self._lock)
        self._max = max_bytes
        self._full = full_bytes  # bytes worth one full SendMessageBatch: flush at once
        self._items: deque[Item] = deque()
        self._bytes = 0  # buffered, not yet taken by the sender
        self._pending = 0  # buffered + in flight: what the memory bound counts
        self._oldest = 0.0  # monotonic time the oldest buffered record arrived
        self._in_flight: list[Item] = []
        self._flush_waiters = 0
        self.accepted = 0
        self.settled = 0  # sent, journaled or failed; flush() waits on this
        self.closing = False
        self.abandoned = False

    # ------------------------------------------------------------ callers

    def put(self, item: Item) -> bool:
        """Append unless the memory bound would be passed. Never blocks long."""
        size = item.size
        with self._lock:
            if self.closing:
                raise ProducerClosed("send() after close()")
            if self._pending + size > self._max and self._pending:
                return False
            self._append(item, size)
        return True

    def put_waiting(self, item: Item, timeout: float) -> bool:
        """Append, waiting up to timeout for the sender to free room."""
        size = item.size
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending + size > self._max and self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or self.closing:
                    return False
                self.cond.wait(left)
            if self.closing:
                raise ProducerClosed("send() after close()")
            self._append(item, size)
        return True

    def _append(self, item: Item, size: int) -> None:
        was_empty = not self._bytes
        if was_empty:
            self._oldest = time.monotonic()
        self._items.append(item)
        self._bytes += size
        self._pending += size
        self.accepted += 1
        if was_empty or (self._bytes >= self._full > self._bytes - size):
            self.cond.notify_all()

    def count_bypass(self, count: int) -> None:
        """Records accepted straight into the journal (overflow): settled at once."""
        with self._lock:
            self.accepted += count
            self.settled += count
            self.cond.notify_all()

    def wait_flushed(self, timeout: float | None) -> bool:
        """Wait until every record accepted before this call is sent or journaled."""
        with self._lock:
            target = self.accepted
            self._flush_waiters += 1
            self.cond.notify_all()
            try:
                return self.cond.wait_for(lambda: self.settled >= target, timeout)
            finally:
                self._flush_waiters -= 1

    def buffered_records(self) -> int:
        with self._lock:
            return self.accepted - self.settled

    # ------------------------------------------------------------ the sender

    def wait_for_work(self, linger: float, until: float | None) -> bool:
        """Block until a flush is due (True) or the monotonic time `until`
        passes for the sender's other jobs, e.g. journal probes (False)."""
        with self._lock:
            while True:
                if self.abandoned:
                    return False
                now = time.monotonic()
                wake: float | None = None
                if self._bytes:
                    due = self._oldest + linger
                    if self._bytes >= self._full or self._flush_waiters or self.closing:
                        return True
                    if now >= due:
                        return True
                    wake = due
                elif self.closing:
                    return False
                if until is not None:
                    if now >= until:
                        return False
                    wake = until if wake is None else min(wake, until)
                self.cond.wait(None if wake is None else wake - now)

    def take(self, max_bytes: int) -> list[Item]:
        """Move up to max_bytes of records (at least one) from the buffer to in flight."""
        taken: list[Item] = []
        size = 0
        with self._lock:
            while self._items and (not taken or size + self._items[0].size <= max_bytes):
                item = self._items.popleft()
                size += item.size
                taken.append(item)
            self._bytes -= size
            if self._bytes:
                self._oldest = time.monotonic()  # the rest waits at most one more linger
            self._in_flight.extend(taken)
        return taken

    def settle(self, items: list[Item]) -> None:
        """These records are sent, journaled or failed: free their room."""
        size = sum(item.size for item in items)
        with self._lock:
            if self.abandoned:
                return  # abandon() already settled them
            done = {id(item) for item in items}
            self._in_flight = [item for item in self._in_flight if id(item) not in done]
            self._pending -= size
            self.settled += len(items)
            self.cond.notify_all()

    def set_full(self, full_bytes: int) -> None:
        """The sender's estimate of one full batch in raw bytes changes with compression."""
        self._full = full_bytes

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._bytes)

    def close(self) -> None:
        with self._lock:
            self.closing = True
            self.cond.notify_all()

    def abandon(self) -> list[Item]:
        """Stop the sender and return everything not yet settled (buffered and
        in flight), for the journal. In-flight records may still reach SQS too."""
        with self._lock:
            self.abandoned = True
            left = self._in_flight + list(self._items)
            self._items.clear()
            self._in_flight = []
            self._bytes = 0
            self._pending = 0
            self.settled += len(left)
            self.cond.notify_all()
        return left
