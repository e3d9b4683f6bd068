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
from dataclasses import dataclass, field

from ingest.errors import SinkUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.flow.ceiling import Ceiling, RateGate, WriteGate, build_gate
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
from ingest.pipeline.route import Router
from ingest.pipeline.settle import SettleOptions, Settler
from ingest.pipeline.write import BatchWriter, WriteStage
from ingest.queues.base import MessageQueue
from ingest.sinks.base import DocumentSink, TombstoneKeeper
from producer import wire

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """What the service is built from: the small typed options of each stage and flow
    part, made from the settings at the edge (ingest/cli/options.py)."""

    receive: ReceiveOptions = field(default_factory=ReceiveOptions)
    settle: SettleOptions = field(default_factory=SettleOptions)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ceiling: Ceiling | None = None  # None: no write ceiling
    router: Router = field(default_factory=Router)
    scaling: ScalingPolicy | None = None  # None: `pollers` per queue, fixed
    pollers: int = 2  # per queue
    writers: int = 4
    ackers: int = 2
    inbox_batches: int = 8
    partitioned: bool = False  # one partition key on one writer, in arrival order
    max_decoded_bytes: int = wire.DEFAULT_MAX_DECODED_BYTES
    keep_payloads: bool = False
    exit_when_idle: float | None = None
    replica_heartbeat_seconds: float = 5.0
    shutdown_seconds: float = 30.0
    poll_stall_seconds: float = 95.0  # liveness: the settings derive it from wait and visibility
    destination: str = "MongoDB"  # for the start line: the database and the write mode
    tombstone_seconds: float = 14 * 86400.0  # how long a delete's tombstone is kept


def _sweep_every(tombstone_seconds: float) -> float:
    """A tenth of the period, between 1 s and 60 s (MongoDB's own TTL monitor's pace)."""
    return min(60.0, max(1.0, tombstone_seconds / 10))


class Service:
    def __init__(
        self,
        options: ServiceOptions,
        queues: Mapping[str, MessageQueue],
        sink: DocumentSink,
        *,
        metrics: Metrics | None = None,
        gate: WriteGate | None = None,
        replicas: ReplicaRegistry | None = None,
        payloads: PayloadStore | None = None,
    ) -> None:
        o = self.options = options
        self.queues = dict(queues)
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.breaker = SinkBreaker()
        self.inflight = InFlight()
        self.gate = gate if gate is not None else build_gate(o.ceiling, self.metrics)
        inbox = Inbox(o.inbox_batches, o.writers if o.partitioned else 1)
        settler = Settler(o.settle)
        self._inbox, self._outbox = inbox, Outbox(settler)
        per_message = RecordsPerMessage()
        writer = BatchWriter(
            sink, self.metrics, self.breaker, self.gate,
            max_decoded_bytes=o.max_decoded_bytes, router=o.router, per_message=per_message,
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
            Pacer(self.gate, self.inflight, per_message, batch=o.receive.max_messages)
            if isinstance(self.gate, RateGate)
            else None
        )
        wiring = Wiring(
            inbox, self._outbox, self.inflight, self.breaker, self.metrics, o.receive, pacer
        )
        self.receive = ReceiveStage(self.queues, wiring, o.pollers, o.scaling)
        self.write = WriteStage(inbox, self._outbox, writer, o.writers)
        cleanup = None
        if payloads is not None and not o.keep_payloads:
            cleanup = PayloadCleanup(payloads, self.metrics)
        self._acknowledger = Acknowledger(
            self.queues, self.inflight, self.metrics, o.retry, cleanup
        )
        self.ack = AckStage(self._outbox, self._acknowledger, o.ackers)
        self.heartbeat = VisibilityHeartbeat(
            self.queues, self.inflight, o.receive.visibility_timeout, self.metrics
        )
        self.idle = IdleWatch(
            o.exit_when_idle or 0.0, self.queues, self.receive, inbox, self.write, self.inflight,
            self.request_stop,
        )  # fmt: skip
        self._jobs = Jobs()
        self._stopping = threading.Event()
        self.stopped = threading.Event()

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        o = self.options
        if self.shared_ceiling is not None:
            self.shared_ceiling.beat()  # register and take our share before the first write
        self.ack.start()
        self.write.start()
        self.receive.start()
        self._schedule_jobs()
        log.info(
            "consuming %s into %s (%d pollers, %d writers)",
            ", ".join(self.queues), o.destination, len(self.receive.pollers), o.writers,
        )  # fmt: skip

    def _schedule_jobs(self) -> None:
        o, jobs = self.options, self._jobs
        jobs.every(self.heartbeat.interval, self.heartbeat.beat, "visibility-heartbeat")
        jobs.every(0.5, lambda: self.breaker.probe(self.sink), "probe-sink")
        jobs.every(10.0, lambda: report_depth(self.queues, self.metrics), "queue-depth")
        jobs.every(0.5, self._report_breaker, "breaker-gauge")
        if o.scaling is not None:
            jobs.every(
                5.0,
                lambda: self.receive.scale(self.write.writer.recent_write_seconds),
                "scale-pollers",
            )
        if self.shared_ceiling is not None:
            jobs.every(o.replica_heartbeat_seconds, self.shared_ceiling.beat, "replicas")
        if o.exit_when_idle is not None:
            jobs.every(0.5, self.idle.check, "idle-exit")
        if isinstance(self.sink, TombstoneKeeper):
            jobs.every(_sweep_every(o.tombstone_seconds), self._sweep_tombstones, "tombstones")
        jobs.start()

    def _sweep_tombstones(self) -> None:
        """Expired tombstones go (on a server without TTL indexes; ingest/sinks/operations.py)."""
        assert isinstance(self.sink, TombstoneKeeper)
        started = time.perf_counter()
        try:
            removed = self.sink.sweep_tombstones(self.options.tombstone_seconds)
        except SinkUnavailable:
            return  # the breaker's probe reports the outage; the next sweep catches up
        self.metrics.tombstones_expired.inc(removed)
        self.metrics.tombstone_sweep_seconds.observe(time.perf_counter() - started)

    def _report_breaker(self) -> None:
        self.metrics.breaker_open.set(1 if self.breaker.is_open else 0)

    def health(self) -> Health:
        """Alive unless stopped or a poll loop has stalled; ready when MongoDB and
        every queue answered last time. From state only: no server is asked."""
        bound = self.options.poll_stall_seconds  # from the wait and visibility settings
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
        seconds = self.options.shutdown_seconds if deadline_seconds is None else deadline_seconds
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
