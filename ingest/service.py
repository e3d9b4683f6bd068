"""Wires the stages: pollers -> inbox -> writers -> outbox -> ackers, plus periodic jobs.

The only module that knows every stage. Shutdown: stop receiving, finish and
acknowledge the batches being written, hand back at once what was not started,
and give up at a deadline by handing back whatever is still held."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from ingest.ack import AckStage
from ingest.breaker import SinkBreaker
from ingest.errors import QueueUnavailable, SinkUnavailable
from ingest.inflight import InFlight
from ingest.messages import Message, Settlement
from ingest.metrics import Metrics
from ingest.queue import MessageQueue
from ingest.ratelimit import Pacer, RateGate, build_gate
from ingest.receive import Inbox, Poller, ReceiveOptions
from ingest.replicas import ReplicaRegistry, SharedCeiling
from ingest.retry import RetryPolicy
from ingest.route import build_router, parse_hooks
from ingest.scaling import ScalingPolicy
from ingest.settings import Settings
from ingest.sink import DocumentSink
from ingest.write import WriteGate, WriteStage

log = logging.getLogger(__name__)


class Service:
    def __init__(
        self,
        settings: Settings,
        queues: Mapping[str, MessageQueue],
        sink: DocumentSink,
        *,
        metrics: Metrics | None = None,
        gate: WriteGate | None = None,
        replicas: ReplicaRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.queues = dict(queues)
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.breaker = SinkBreaker()
        self.inflight = InFlight()
        self._inbox = Inbox(settings.inbox_size, settings.writers if settings.partitioned else 1)
        self._outbox: queue.Queue[Settlement | None] = queue.Queue()
        if gate is None:
            gate = build_gate(
                settings.max_write_rate, settings.write_burst, settings.write_rate,
                settings.target_write_latency, settings.min_write_rate, self.metrics,
            )  # fmt: skip
        self.gate = gate
        self.shared_ceiling = (
            SharedCeiling(replicas, gate, self.metrics)
            if replicas is not None and isinstance(gate, RateGate)
            else None
        )
        router = build_router(
            settings.allow_collections, settings.allow_prefixes, parse_hooks(settings.hooks)
        )
        self._write = WriteStage(
            sink, self.metrics, self.breaker, gate,
            max_decoded_bytes=settings.max_decoded_bytes, router=router,
        )  # fmt: skip
        retry_policy = RetryPolicy(settings.retry_base_seconds, settings.retry_max_seconds)
        self._ack = AckStage(self.queues, self.inflight, self.metrics, retry_policy)
        self._pollers = [
            self._poller(q) for q in self.queues.values() for _ in range(settings.pollers)
        ]
        self._stopping = threading.Event()
        self.stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._scheduler = BackgroundScheduler(daemon=True)
        self._last_activity = time.monotonic()
        self._busy_writers = 0
        self._lock = threading.Lock()

    def _poller(self, source: MessageQueue) -> Poller:
        options = ReceiveOptions(
            self.settings.max_messages, self.settings.wait_seconds, self.settings.visibility_timeout
        )
        pace = (
            Pacer(self.gate, self.inflight, self.metrics, batch=options.max_messages).ready
            if isinstance(self.gate, RateGate)
            else None
        )
        return Poller(
            source, self._inbox, self.inflight, self.breaker, self.metrics, options, self.release,
            pace,
        )  # fmt: skip

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        s = self.settings
        if self.shared_ceiling is not None:
            self.shared_ceiling.beat()  # register and take our share before the first write
        for index, poller in enumerate(self._pollers):
            self._spawn(poller.run, f"poller-{index}")
        for index in range(s.writers):
            self._spawn(lambda lane=index: self._writer_loop(lane), f"writer-{index}")
        for index in range(s.ackers):
            self._spawn(self._ack_loop, f"acker-{index}")
        self._schedule_jobs()
        log.info(
            "consuming %s into %s (%d pollers, %d writers, mode %s)",
            ", ".join(self.queues), s.database, len(self._pollers), s.writers, s.write_mode.value,
        )  # fmt: skip

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _schedule_jobs(self) -> None:
        heartbeat = max(1.0, self.settings.visibility_timeout / 6)
        self._scheduler.add_job(
            self.extend_visibility, "interval", seconds=heartbeat, id="heartbeat"
        )
        self._scheduler.add_job(self.probe_sink, "interval", seconds=1.0, id="probe-sink")
        self._scheduler.add_job(self.read_depth, "interval", seconds=10.0, id="queue-depth")
        if self.settings.max_pollers:
            self._scheduler.add_job(self.scale_pollers, "interval", seconds=5.0, id="scale-pollers")
        if self.shared_ceiling is not None:
            self._scheduler.add_job(
                self.shared_ceiling.beat, "interval", id="replicas",
                seconds=self.settings.replica_heartbeat_seconds,
            )  # fmt: skip
        if self.settings.exit_when_idle is not None:
            self._scheduler.add_job(self._stop_if_idle, "interval", seconds=0.5, id="idle-exit")
        self._scheduler.start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    def request_stop(self) -> None:
        self._stopping.set()
        for poller in self._pollers:
            poller.stopping.set()

    def stop(self, deadline_seconds: float | None = None) -> None:
        """Graceful stop; returns when everything held is acknowledged or handed back."""
        deadline = time.monotonic() + (
            self.settings.shutdown_seconds if deadline_seconds is None else deadline_seconds
        )
        self.request_stop()
        writers = [t for t in self._threads if t.name.startswith("writer-")]
        ackers = [t for t in self._threads if t.name.startswith("acker-")]
        _join(writers, deadline)
        self._release_inbox()
        for _ in ackers:
            self._outbox.put(None)
        _join(ackers, deadline)
        leftover = self.inflight.all()
        if leftover:
            log.warning("handing back %d messages still held at the deadline", len(leftover))
            self.release(leftover)
        self._scheduler.shutdown(wait=False)
        if self.shared_ceiling is not None:
            self.shared_ceiling.leave()  # the others take up our share at their next heartbeat
        self.stopped.set()

    # ------------------------------------------------------------------ stages

    def _writer_loop(self, lane: int) -> None:
        while not self._stopping.is_set():
            messages = self._take_batch(lane)
            if not messages:
                continue
            with self._lock:
                self._busy_writers += 1
            try:
                self._outbox.put(self._write.process(messages))
            except Exception:  # a bug must not kill the writer or lose the messages
                log.exception("write stage failed; handing %d messages back", len(messages))
                self._outbox.put(Settlement(release=messages))
            finally:
                with self._lock:
                    self._busy_writers -= 1
                    self._last_activity = time.monotonic()

    def _take_batch(self, lane: int) -> list[Message]:
        # One receive batch per bulk write. Merging waiting batches into one bulk was
        # measured (packed and one-record messages, MongoDB near and 10 ms away) and
        # did not help: packed batches are large already, and one-record messages are
        # limited by SQS, not MongoDB. So it is not done.
        try:
            return list(self._inbox.get(lane, timeout=0.2))
        except queue.Empty:
            return []

    def _ack_loop(self) -> None:
        while True:
            settlement = self._outbox.get()
            if settlement is None:
                return
            try:
                self._ack.apply(settlement)
            except Exception:
                log.exception("acknowledge stage failed; messages will reappear after visibility")

    def release(self, messages: list[Message]) -> None:
        """Make messages visible again at once (shutdown, or MongoDB down)."""
        self._ack.apply(Settlement(release=messages))

    def _release_inbox(self) -> None:
        leftover = self._inbox.drain()
        if leftover:
            self.release(leftover)

    # -------------------------------------------------------------------- jobs

    def extend_visibility(self) -> None:
        """Heartbeat: a batch still being worked on keeps its messages invisible."""
        timeout = self.settings.visibility_timeout
        expiring = self.inflight.expiring(within=timeout / 2)
        by_queue: dict[str, list[tuple[Message, int]]] = {}
        for message in expiring:
            by_queue.setdefault(message.queue_url, []).append((message, timeout))
        for url, entries in by_queue.items():
            try:
                failed = {m.message_id for m in self.queues[url].change_visibility(entries)}
            except QueueUnavailable as exc:
                log.warning("visibility heartbeat failed: %s", exc)
                continue
            now = time.monotonic()
            for message, _ in entries:
                if message.message_id not in failed:
                    message.visible_until = now + timeout
            self.metrics.visibility_extended.inc(len(entries) - len(failed))

    def scale_pollers(self) -> None:
        """Adds or stops one poller per queue at a time, between the configured bounds."""
        s = self.settings
        policy = ScalingPolicy(s.min_pollers or 1, s.max_pollers)
        for source in self.queues.values():
            running = [p for p in self._pollers if p.source is source and not p.stopping.is_set()]
            try:
                visible = source.depth().visible
            except QueueUnavailable:
                continue
            target = policy.desired(
                visible, len(running), self._write.recent_write_seconds, self._inbox.full()
            )
            if target > len(running) and not self._stopping.is_set():
                poller = self._poller(source)
                self._pollers.append(poller)
                self._spawn(poller.run, f"poller-{len(self._pollers) - 1}")
            elif target < len(running):
                running[-1].stopping.set()  # it finishes its receive and hands the batch on

    def probe_sink(self) -> None:
        self.metrics.breaker_open.set(1 if self.breaker.is_open else 0)
        if not self.breaker.is_open:
            return
        try:
            self.sink.ping()
        except SinkUnavailable:
            return
        self.breaker.record_success()
        self.metrics.breaker_open.set(0)

    def read_depth(self) -> None:
        for url, source in self.queues.items():
            try:
                depth = source.depth()
            except QueueUnavailable:
                continue
            self.metrics.queue_visible.labels(url).set(depth.visible)
            self.metrics.queue_in_flight.labels(url).set(depth.in_flight)

    def is_idle(self) -> bool:
        with self._lock:
            busy = self._busy_writers
        receiving = any(p.last_received_count for p in self._pollers if not p.stopping.is_set())
        return not busy and not receiving and self._inbox.empty() and not len(self.inflight)

    def _stop_if_idle(self) -> None:
        if not self.is_idle():
            with self._lock:
                self._last_activity = time.monotonic()
            return
        idle_for = time.monotonic() - self._last_activity
        if self.settings.exit_when_idle is not None and idle_for >= self.settings.exit_when_idle:
            if self._queues_hold_visible_messages():
                return  # pollers were just slow to get to them (a busy machine)
            log.info("idle for %.1fs: stopping", idle_for)
            self.request_stop()

    def _queues_hold_visible_messages(self) -> bool:
        try:
            return any(source.depth().visible for source in self.queues.values())
        except QueueUnavailable:
            return False


def _join(threads: list[threading.Thread], deadline: float) -> None:
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
