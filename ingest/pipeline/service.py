"""Wires the stages: receive -> inbox -> write -> outbox -> acknowledge, plus the jobs.

The only module that knows every stage; it builds them, starts them, and stops them
in order: stop receiving, finish and acknowledge the batches being written, hand
back at once what was not started, and give up at a deadline by handing back
whatever is still held."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from ingest.errors import SinkUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.flow.ceiling import RateGate, WriteGate, build_gate
from ingest.flow.pacer import Pacer, RecordsPerMessage
from ingest.flow.replicas import ReplicaRegistry, SharedCeiling
from ingest.flow.retry import RetryPolicy
from ingest.flow.scaling import ScalingPolicy
from ingest.health import Health
from ingest.metrics import Metrics
from ingest.payloads.base import PayloadStore
from ingest.pipeline.ack import Acknowledger, AckStage
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.claims import PayloadCleanup
from ingest.pipeline.heartbeat import VisibilityHeartbeat
from ingest.pipeline.idle import IdleWatch
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.jobs import Jobs, report_depth
from ingest.pipeline.receive import ReceiveOptions, ReceiveStage, Wiring
from ingest.pipeline.route import build_router
from ingest.pipeline.settle import SettleOptions, Settler
from ingest.pipeline.write import BatchWriter, WriteStage
from ingest.queues.base import MessageQueue
from ingest.settings import Settings
from ingest.sinks.base import DocumentSink, TombstoneKeeper

log = logging.getLogger(__name__)


def _sweep_every(tombstone_seconds: float) -> float:
    """A tenth of the period, between 1 s and 60 s (MongoDB's own TTL monitor's pace)."""
    return min(60.0, max(1.0, tombstone_seconds / 10))


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
        payloads: PayloadStore | None = None,
    ) -> None:
        s = settings
        self.settings = settings
        self.queues = dict(queues)
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.breaker = SinkBreaker()
        self.inflight = InFlight()
        self.gate = gate if gate is not None else build_gate(s, self.metrics)
        inbox = Inbox(s.inbox_size, s.writers if s.partitioned else 1)
        retry_policy = RetryPolicy(s.retry_base_seconds, s.retry_max_seconds)
        settler = Settler(SettleOptions(s.on_conflict, s.max_attempts, retry_policy))
        self._inbox, self._outbox = inbox, Outbox(settler)
        per_message = RecordsPerMessage()
        router = build_router(s.allow_collections, s.allow_prefixes, s.hooks)
        writer = BatchWriter(
            sink, self.metrics, self.breaker, self.gate,
            max_decoded_bytes=s.max_decoded_bytes, router=router, per_message=per_message,
            settler=settler, payloads=payloads,
        )  # fmt: skip
        # Every replica checks in (its write rate, for `ingest status`); under a ceiling
        # it also takes its share there.
        self.shared_ceiling = None
        if replicas is not None:
            self.shared_ceiling = SharedCeiling(
                replicas, self.gate if isinstance(self.gate, RateGate) else None,
                handled=lambda: writer.records_handled, per_message=lambda: per_message.value,
            )  # fmt: skip
        pacer = (
            Pacer(self.gate, self.inflight, per_message, batch=s.max_messages)
            if isinstance(self.gate, RateGate)
            else None
        )
        options = ReceiveOptions(s.max_messages, s.wait_seconds, s.visibility_timeout)
        wiring = Wiring(
            inbox, self._outbox, self.inflight, self.breaker, self.metrics, options, pacer
        )
        scaling = ScalingPolicy(s.min_pollers or 1, s.max_pollers) if s.max_pollers else None
        self.receive = ReceiveStage(self.queues, wiring, s.pollers, scaling)
        self.write = WriteStage(inbox, self._outbox, writer, s.writers)
        cleanup = None
        if payloads is not None and not s.keep_payloads:
            cleanup = PayloadCleanup(payloads, self.metrics)
        self._acknowledger = Acknowledger(
            self.queues, self.inflight, self.metrics, retry_policy, cleanup
        )
        self.ack = AckStage(self._outbox, self._acknowledger, s.ackers)
        self.heartbeat = VisibilityHeartbeat(
            self.queues, self.inflight, s.visibility_timeout, self.metrics
        )
        self.idle = IdleWatch(
            s.exit_when_idle or 0.0, self.queues, self.receive, inbox, self.write, self.inflight,
            self.request_stop,
        )  # fmt: skip
        self._jobs = Jobs()
        self._stopping = threading.Event()
        self.stopped = threading.Event()

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        s = self.settings
        if self.shared_ceiling is not None:
            self.shared_ceiling.beat()  # register and take our share before the first write
        self.ack.start()
        self.write.start()
        self.receive.start()
        self._schedule_jobs()
        log.info(
            "consuming %s into %s (%d pollers, %d writers, mode %s)",
            ", ".join(self.queues), s.database, len(self.receive.pollers), s.writers,
            s.write_mode.value,
        )  # fmt: skip

    def _schedule_jobs(self) -> None:
        s, jobs = self.settings, self._jobs
        jobs.every(self.heartbeat.interval, self.heartbeat.beat, "visibility-heartbeat")
        jobs.every(0.5, lambda: self.breaker.probe(self.sink), "probe-sink")
        jobs.every(10.0, lambda: report_depth(self.queues, self.metrics), "queue-depth")
        jobs.every(0.5, self._report_breaker, "breaker-gauge")
        if s.max_pollers:
            jobs.every(
                5.0,
                lambda: self.receive.scale(self.write.writer.recent_write_seconds),
                "scale-pollers",
            )
        if self.shared_ceiling is not None:
            jobs.every(s.replica_heartbeat_seconds, self.shared_ceiling.beat, "replicas")
        if s.exit_when_idle is not None:
            jobs.every(0.5, self.idle.check, "idle-exit")
        if isinstance(self.sink, TombstoneKeeper):
            jobs.every(_sweep_every(s.tombstone_seconds), self._sweep_tombstones, "tombstones")
        jobs.start()

    def _sweep_tombstones(self) -> None:
        """Expired tombstones go (on a server without TTL indexes; ingest/sinks/operations.py)."""
        assert isinstance(self.sink, TombstoneKeeper)
        started = time.perf_counter()
        try:
            removed = self.sink.sweep_tombstones(self.settings.tombstone_seconds)
        except SinkUnavailable:
            return  # the breaker's probe reports the outage; the next sweep catches up
        self.metrics.tombstones_expired.inc(removed)
        self.metrics.tombstone_sweep_seconds.observe(time.perf_counter() - started)

    def _report_breaker(self) -> None:
        self.metrics.breaker_open.set(1 if self.breaker.is_open else 0)

    def health(self) -> Health:
        """Alive unless stopped or a poll loop has stalled; ready when MongoDB and
        every queue answered last time. From state only: no server is asked."""
        bound = self.settings.poll_stall_seconds  # from the wait and visibility settings
        reason = ""
        if self.stopped.is_set():
            reason = "stopped"
        elif stalled := self.receive.stalled(bound):
            reason = (
                f"{len(stalled)} of {len(self.receive.running())} pollers have completed "
                f"no receive for over {bound:.0f}s and are not paused"
            )
        checks = {"mongodb": (self.breaker.reason or "down") if self.breaker.is_open else "ok"}
        errors = self.receive.receive_errors()
        checks["sqs"] = errors[0] if errors else "ok"
        ready = not reason and all(v == "ok" for v in checks.values())
        return Health(alive=not reason, ready=ready, checks=checks, reason=reason)

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopping.wait(timeout)

    def request_stop(self) -> None:
        self._stopping.set()
        self.receive.stop()

    def stop(self, deadline_seconds: float | None = None) -> None:
        """Graceful stop; returns when everything held is acknowledged or handed back."""
        seconds = self.settings.shutdown_seconds if deadline_seconds is None else deadline_seconds
        deadline = time.monotonic() + seconds
        self.request_stop()
        self.write.stop()
        self.write.join(deadline)
        self.write.drain()
        # Pollers in a long poll are not waited for (up to 20 s); one that returns with
        # messages later leaves them held, visible again after their timeout.
        self.receive.join(min(deadline, time.monotonic() + 1.0))
        self.ack.stop()
        self.ack.join(deadline)
        leftover = self.inflight.all()
        if leftover:
            log.warning("handing back %d messages still held at the deadline", len(leftover))
            self._acknowledger.apply(self.write.writer.settler.released(leftover))
        self._jobs.stop()
        if self.shared_ceiling is not None:
            self.shared_ceiling.leave()  # the others take up our share at their next heartbeat
        self.stopped.set()
