"""Receive stage: pollers long-poll the queue and hand batches on through a bounded inbox.

The inbox bound is the back-pressure: when writers fall behind, `put` blocks and
the pollers stop receiving, so messages never sit received and unwritten."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ingest.breaker import SinkBreaker
from ingest.errors import QueueUnavailable
from ingest.inflight import InFlight
from ingest.messages import Message
from ingest.metrics import Metrics
from ingest.queue import MessageQueue

log = logging.getLogger(__name__)

Inbox = queue.Queue[list[Message]]


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
    ) -> None:
        self._source = source
        self._inbox = inbox
        self._inflight = inflight
        self._breaker = breaker
        self._metrics = metrics
        self._options = options
        self._release = release
        self.stopping = threading.Event()
        self.last_received_count = 0

    def run(self) -> None:
        self._metrics.pollers_running.inc()
        try:
            backoff = 0.5
            while not self.stopping.is_set():
                if not self._breaker.wait_closed(timeout=1.0):
                    continue  # MongoDB is down: receiving would only burn receive counts
                try:
                    self.poll_once()
                    backoff = 0.5
                except QueueUnavailable as exc:
                    self._metrics.receive_errors.inc()
                    log.warning("receive failed, retrying in %.1fs: %s", backoff, exc)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self._metrics.pollers_running.dec()

    def poll_once(self) -> int:
        o = self._options
        messages = self._source.receive(o.max_messages, o.wait_seconds, o.visibility_timeout)
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
        while not self.stopping.is_set():
            try:
                self._inbox.put(messages, timeout=0.5)
                return
            except queue.Full:
                continue
        self._release(messages)  # shutting down: let another consumer have them now
