"""Receive stage: pollers long-poll each queue and hand batches on through the inbox.

Each poller owns its loop and thread. While MongoDB is down (the breaker is open)
they do not receive: receiving would only burn receive counts. Under a write
ceiling they receive only what the writers can use soon (flow/pacer.py). The
stage scales its pollers per queue between bounds (flow/scaling.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ingest.errors import QUEUE_CALL_FAILED
from ingest.flow.breaker import SinkBreaker
from ingest.flow.pacer import Pacer
from ingest.flow.scaling import ScalingPolicy
from ingest.logs import Tracebacks
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.threads import join_by
from ingest.queues.base import Message, MessageQueue

log = logging.getLogger(__name__)
_tracebacks = Tracebacks(log)


@dataclass(frozen=True, slots=True)
class ReceiveOptions:
    max_messages: int = 10
    wait_seconds: int = 20
    visibility_timeout: int = 30


@dataclass(frozen=True, slots=True)
class Wiring:
    """What every poller shares."""

    inbox: Inbox
    outbox: Outbox
    inflight: InFlight
    breaker: SinkBreaker
    metrics: Metrics
    options: ReceiveOptions
    pacer: Pacer | None = None
    clock: Callable[[], float] = time.time  # wall clock, against SQS's SentTimestamp


class Poller:
    def __init__(self, source: MessageQueue, wiring: Wiring, name: str) -> None:
        self.source = source
        self._wiring = wiring
        self.stopping = threading.Event()
        self.last_received_count = 0
        # When the loop last went round: a receive completed, or a deliberate pause
        # (breaker open, ceiling, full inbox) checked in. Liveness reads it.
        self.last_beat = time.monotonic()
        self.last_error: str | None = None  # the last receive's failure, until one succeeds
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def run(self) -> None:
        w = self._wiring
        w.metrics.pollers_running.inc()
        try:
            backoff = 0.5
            while not self.stopping.is_set():
                self.last_beat = time.monotonic()
                if not w.breaker.wait_closed(timeout=1.0):
                    continue  # MongoDB is down: receiving would only burn receive counts
                wanted = w.options.max_messages
                if w.pacer is not None:
                    wanted = min(wanted, w.pacer.ready(1.0))
                    if not wanted:
                        continue  # under the ceiling: don't hold what the writers can't use yet
                try:
                    self.poll_once(wanted)
                    backoff = 0.5
                except Exception as exc:  # the poller lives on: nothing is held yet
                    self._failed(exc, backoff)
                    self.last_beat = time.monotonic() + backoff  # a deliberate pause
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            w.metrics.pollers_running.dec()

    def _failed(self, exc: Exception, backoff: float) -> None:
        """A receive that failed: SQS's trouble is a warning; anything else is a bug,
        shown once a minute. Messages it may have received turn visible again."""
        w = self._wiring
        w.metrics.receive_errors.inc()
        if isinstance(exc, QUEUE_CALL_FAILED):
            self.last_error = str(exc)
            log.warning("receive failed, retrying in %.1fs: %s", backoff, exc)
            return
        self.last_error = f"internal error in the receive stage ({type(exc).__name__})"
        w.metrics.internal_errors.labels("receive").inc()
        _tracebacks.report("receive", exc, f"receive failed, retrying in {backoff:.1f}s")

    def _beat(self) -> None:
        self.last_beat = time.monotonic()

    def poll_once(self, max_messages: int | None = None) -> int:
        w = self._wiring
        o = w.options
        messages = self.source.receive(
            max_messages or o.max_messages, o.wait_seconds, o.visibility_timeout
        )
        self.last_beat, self.last_error = time.monotonic(), None
        self.last_received_count = len(messages)
        if not messages:
            return 0
        w.metrics.messages_received.inc(len(messages))
        self._observe_wait(messages)
        fresh, repeats = w.inflight.admit(messages)
        w.metrics.duplicate_deliveries.inc(repeats)
        if fresh:
            try:
                self._hand_on(fresh)
            except Exception:  # held, but placed nowhere: hand them back, then report
                w.outbox.release(fresh)
                raise
        return len(fresh)

    def _observe_wait(self, messages: Sequence[Message]) -> None:
        """How long each message waited in SQS: from SQS's own send time, so that the
        producers' clocks do not matter (ours against SQS's still does: never below 0)."""
        now = self._wiring.clock()
        histogram = self._wiring.metrics.queue_wait_seconds
        for message in messages:
            if message.sent_at is not None:
                histogram.observe(max(0.0, now - message.sent_at))

    def _hand_on(self, messages: list[Message]) -> None:
        unplaced = self._wiring.inbox.put(messages, self.stopping, self._beat)
        # Shutting down: let another consumer have them now.
        self._wiring.outbox.release(unplaced)


class ReceiveStage:
    def __init__(
        self,
        queues: Mapping[str, MessageQueue],
        wiring: Wiring,
        pollers_per_queue: int,
        scaling: ScalingPolicy | None = None,
    ) -> None:
        self._queues = queues
        self._wiring = wiring
        self._scaling = scaling
        self._count = 0
        self._stopped = False
        self.pollers = [self._poller(q) for q in queues.values() for _ in range(pollers_per_queue)]

    def _poller(self, source: MessageQueue) -> Poller:
        self._count += 1
        return Poller(source, self._wiring, f"poller-{self._count}")

    def start(self) -> None:
        for poller in self.pollers:
            poller.start()

    def stop(self) -> None:
        self._stopped = True
        for poller in self.pollers:
            poller.stopping.set()

    def join(self, deadline: float) -> None:
        join_by((poller.thread for poller in self.pollers), deadline)

    def running(self) -> list[Poller]:
        return [p for p in self.pollers if not p.stopping.is_set()]

    @property
    def receiving(self) -> bool:
        """Did any poller's last receive bring messages?"""
        return any(p.last_received_count for p in self.running())

    def stalled(self, bound: float) -> list[Poller]:
        """Running pollers whose loop has not gone round for `bound` seconds."""
        now = time.monotonic()
        return [p for p in self.running() if now - p.last_beat > bound]

    def receive_errors(self) -> list[str]:
        return [p.last_error for p in self.running() if p.last_error]

    def scale(self, write_seconds: float) -> None:
        """The scaling job: one poller more or fewer per queue at a time."""
        if self._scaling is None or self._stopped:
            return
        for source in self._queues.values():
            running = [p for p in self.running() if p.source is source]
            try:
                visible = source.depth().visible
            except QUEUE_CALL_FAILED:
                continue
            target = self._scaling.desired(
                visible, len(running), write_seconds, self._wiring.inbox.full()
            )
            if target > len(running):
                poller = self._poller(source)
                self.pollers.append(poller)
                poller.start()
            elif target < len(running):
                running[-1].stopping.set()  # it finishes its receive and hands the batch on
