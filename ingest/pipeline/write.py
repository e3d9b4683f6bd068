"""Write stage: writers take a batch from the inbox, decode it, write its records in
bulks, and hand each batch's settlement (settle.py decides it) to the outbox.

Whatever fails here is contained to the smallest unit that raised it: an unexpected
exception while writing a bulk is bisected down to the record, one while decoding or
routing stays with its message, and one that escapes a whole batch is bisected by
message. Each becomes a failed attempt of that record or message, with a reason for
its sender, under the same attempt bound as any other failure; the log shows one
traceback per distinct failure a minute. Only SinkUnavailable (MongoDB does not
answer) hands messages back without counting an attempt, and PayloadUnavailable (S3
does not answer) the messages whose payload it keeps, a little later each time."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from bson import ObjectId, json_util
from bson.errors import BSONError

from ingest.errors import PayloadUnavailable, SinkUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.flow.ceiling import OpenGate, WriteGate
from ingest.flow.pacer import RecordsPerMessage
from ingest.logs import Throttled, Tracebacks
from ingest.metrics import Metrics
from ingest.payloads.base import PayloadStore
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.decode import decode
from ingest.pipeline.messages import DecodedMessage, Settlement
from ingest.pipeline.route import Router
from ingest.pipeline.settle import Settler
from ingest.pipeline.threads import join_by
from ingest.queues.base import Message
from ingest.sinks.base import WRITTEN, DocumentSink, Outcome, OutcomeKind, retry
from ingest.sinks.isolation import bisect
from ingest.tracing import BulkTracing
from producer import wire

log = logging.getLogger(__name__)
_conflict_log = Throttled(log, interval=10.0)
_payload_log = Throttled(log, interval=10.0)
_tracebacks = Tracebacks(log)

# End-to-end samples from an _id time further ahead than this are clock skew (an
# ObjectId counts whole seconds, so a fresh one is at most a second behind, never ahead).
FUTURE_TOLERANCE_SECONDS: Final = 1.0
# ...or older than SQS keeps a message (14 days): an _id not stamped when it was sent
# (a backfill's derived ids, an application's own), not a record that waited that long.
MAX_PLAUSIBLE_LAG_SECONDS: Final = 14 * 86400.0


class BatchWriter:
    """One receive batch -> one settlement: decode, route, write in bulks, settle."""

    def __init__(
        self,
        sink: DocumentSink,
        metrics: Metrics,
        breaker: SinkBreaker,
        gate: WriteGate | None = None,
        *,
        max_decoded_bytes: int = wire.DEFAULT_MAX_DECODED_BYTES,
        clock: Callable[[], float] = time.time,
        router: Router | None = None,
        per_message: RecordsPerMessage | None = None,
        settler: Settler | None = None,
        payloads: PayloadStore | None = None,
    ) -> None:
        self._sink = sink
        self._payloads = payloads
        self._metrics = metrics
        self._breaker = breaker
        self._gate = gate or OpenGate()
        self._max_decoded_bytes = max_decoded_bytes
        self._clock = clock
        self._router = router or Router()
        self._per_message = per_message or RecordsPerMessage()
        self._tracing = BulkTracing()
        self.settler = settler or Settler()
        self.recent_write_seconds = 0.0  # moving average of bulk write latency, for scaling
        self._handled_lock = threading.Lock()
        self._handled = 0  # records handed to the sink, ever: the replica board's write rate

    def process(self, messages: Sequence[Message]) -> Settlement:
        if self._breaker.is_open:
            # Don't spend the write on a store known to be down: hand the messages back.
            return self.settler.released(messages)
        decoded, unavailable = self._decode_all(messages)
        records = [record for item in decoded for record in item.records]
        self._metrics.records_received.inc(len(records))
        waits: list[float] = []  # the messages' seconds in SQS, for the bulks' spans
        if self._tracing.enabled:
            now = self._clock()
            waits = [now - m.sent_at for m in messages if m.sent_at is not None]
        self._per_message.observe(len(messages), len(records))
        try:
            if any(item.message.group_id for item in decoded):
                outcomes = self._write_groups(decoded, waits)
            else:
                outcomes = self._write(records, waits)
        except SinkUnavailable as exc:
            self._metrics.sink_failures.inc()
            self._breaker.record_failure(str(exc))
            return self.settler.released(messages)
        settlement = self.settler.settle(decoded, outcomes)
        if unavailable:
            settlement.extend(self.settler.released(unavailable, later=True))
        return settlement

    def _decode_all(
        self, messages: Sequence[Message]
    ) -> tuple[list[DecodedMessage], list[Message]]:
        """The messages decoded, and those whose payload S3 could not give now."""
        decoded: list[DecodedMessage] = []
        unavailable: list[Message] = []
        for message in messages:
            try:
                decoded.append(self._decode(message))
            except PayloadUnavailable as exc:
                self._metrics.payload_failures.inc()
                _payload_log.warning(f"payload unavailable, message handed back: {exc}")
                unavailable.append(message)
        return decoded, unavailable

    def contained(self, messages: Sequence[Message]) -> Settlement:
        """process(), and when it raises, the same on each half of the batch, down to the
        message: its neighbours are settled, and it counts one failed attempt."""
        try:
            return self.process(messages)
        except Exception as exc:
            if len(messages) == 1:
                return self._failed(messages[0], exc)
        half = len(messages) // 2
        settlement = self.contained(messages[:half])
        settlement.extend(self.contained(messages[half:]))
        return settlement

    def _failed(self, message: Message, exc: Exception) -> Settlement:
        self._internal_error("write", exc, f"write stage failed on message {message.message_id}")
        reason = internal_error_reason("could not handle this message", "write stage", exc)
        return self.settler.failed(message, reason)

    def _decode(self, message: Message) -> DecodedMessage:
        """Decoded and routed; an unexpected error stays with this message."""
        step = "decode"
        try:
            item = decode(message, self._max_decoded_bytes, self._payloads)
            step = "route"
            if not self._router.is_open:
                _route(item, self._router)
            return item
        except PayloadUnavailable:
            raise  # an outage: the message goes back, no attempt counted
        except Exception as exc:
            self._internal_error(step, exc, f"{step} step failed on message {message.message_id}")
            reason = internal_error_reason(f"could not {step} this message", f"{step} step", exc)
            return DecodedMessage(message, failure=reason)

    def _internal_error(self, stage: str, exc: Exception, what: str) -> None:
        self._metrics.internal_errors.labels(stage).inc()
        _tracebacks.report(stage, exc, what)

    @property
    def records_handled(self) -> int:
        with self._handled_lock:
            return self._handled

    def _write(self, records: list[wire.Record], waits: list[float]) -> list[Outcome]:
        # Under a ceiling, bulks no larger than the burst keep MongoDB's load flat.
        size = self._gate.max_bulk() or max(1, len(records))
        outcomes: list[Outcome] = []
        for start in range(0, len(records), size):
            outcomes.extend(self._write_bulk(records[start : start + size], waits))
        return outcomes

    def _write_groups(self, decoded: list[DecodedMessage], waits: list[float]) -> list[Outcome]:
        """FIFO: each MessageGroupId's records strictly in order, one group after another."""
        groups: dict[str, list[int]] = {}
        owners: list[Message] = []
        for item in decoded:
            key = item.message.group_id or ""
            groups.setdefault(key, []).extend(range(len(owners), len(owners) + len(item.records)))
            owners += [item.message] * len(item.records)
        records = [record for item in decoded for record in item.records]
        outcomes: list[Outcome] = [WRITTEN] * len(records)
        for indexes in groups.values():
            self._write_group(records, indexes, owners, outcomes, waits)
        return outcomes

    def _write_group(
        self,
        records: list[wire.Record],
        indexes: list[int],
        owners: list[Message],
        outcomes: list[Outcome],
        waits: list[float],
    ) -> None:
        """In order; a record still failing at its last attempt is given up (dead-lettered)
        and the rest of the group goes on, so the group is never stuck behind it."""
        remaining = indexes
        while remaining:
            found = self._write_bulk([records[i] for i in remaining], waits, ordered=True)
            for index, outcome in zip(remaining, found, strict=True):
                outcomes[index] = outcome
            failed = next((n for n, o in enumerate(found) if o.kind is OutcomeKind.RETRY), None)
            if failed is None or not self.settler.last_attempt(owners[remaining[failed]]):
                return
            owner = owners[remaining[failed]]
            outcomes[remaining[failed]] = self.settler.given_up(owner, found[failed])
            remaining = remaining[failed + 1 :]

    def _write_bulk(
        self, records: list[wire.Record], waits: list[float], *, ordered: bool = False
    ) -> list[Outcome]:
        """One bulk; an unexpected exception is bisected down to the records that raise it."""
        return bisect(
            records,
            lambda part: self._write_part(list(part), waits, ordered=ordered),
            self._failed_alone,
            (Exception,),
            ordered=ordered,
        )

    def _failed_alone(self, records: Sequence[wire.Record], exc: Exception) -> Outcome:
        self._internal_error("write", exc, f"writing a record to {records[0].collection} failed")
        return retry(internal_error_reason("could not write this record", "write stage", exc))

    def _write_part(
        self, records: list[wire.Record], waits: list[float], *, ordered: bool
    ) -> list[Outcome]:
        if not records:
            return []
        self._gate.acquire(len(records))
        started = time.perf_counter()
        try:
            write = self._sink.write_ordered if ordered else self._sink.write
            with self._tracing.bulk(records, waits):
                outcomes = write(records)
        except SinkUnavailable:
            self._gate.observe(len(records), time.perf_counter() - started, overloaded=True)
            raise
        if len(outcomes) != len(records):  # a sink that broke its contract: nobody's record
            raise RuntimeError(f"the sink answered {len(outcomes)} outcomes for {len(records)}")
        elapsed = time.perf_counter() - started
        self.recent_write_seconds += 0.2 * (elapsed - self.recent_write_seconds)
        with self._handled_lock:
            self._handled += len(records)
        self._breaker.record_success()
        overloaded = any(o.kind is OutcomeKind.RETRY for o in outcomes)
        self._gate.observe(len(records), elapsed, overloaded=overloaded)
        self._observe(records, outcomes, elapsed)
        return outcomes

    def _observe(self, records: list[wire.Record], outcomes: list[Outcome], elapsed: float) -> None:
        m = self._metrics
        m.write_seconds.observe(elapsed)
        m.batch_records.observe(len(records))
        counts = dict.fromkeys(OutcomeKind, 0)
        for outcome in outcomes:
            counts[outcome.kind] += 1
        m.records_written.inc(counts[OutcomeKind.WRITTEN])
        m.records_duplicate.inc(counts[OutcomeKind.DUPLICATE])
        m.records_retried.inc(counts[OutcomeKind.RETRY])
        m.records_stale.inc(counts[OutcomeKind.STALE])
        if counts[OutcomeKind.CONFLICT]:
            self._conflicts(records, outcomes)
        self._end_to_end(records[0])

    def _conflicts(self, records: list[wire.Record], outcomes: list[Outcome]) -> None:
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome.kind is OutcomeKind.CONFLICT:
                self._metrics.records_conflicting.labels(record.collection).inc()
                _conflict_log.warning(
                    f"conflicting duplicate in {record.collection}: _id"
                    f" {_id_text(_record_id(record))} is stored with other content"
                    f" (--on-conflict {self.settler.on_conflict.value})"
                )

    def _end_to_end(self, first: wire.Record) -> None:
        """One sample per batch keeps the histogram cheap; clock skew is counted instead.
        An operation's own id is its time of sending (its _id may be years old)."""
        oid = first.operation.id if first.operation is not None else _record_id(first)
        if not isinstance(oid, ObjectId):
            return
        lag = self._clock() - oid.generation_time.timestamp()
        if lag < -FUTURE_TOLERANCE_SECONDS:
            self._metrics.end_to_end_skewed.labels("future").inc()
        elif lag > MAX_PLAUSIBLE_LAG_SECONDS:
            self._metrics.end_to_end_skewed.labels("old").inc()
        else:
            self._metrics.end_to_end_seconds.observe(max(0.0, lag))


def _record_id(record: wire.Record) -> Any:
    """The _id, or None for a document the store refused as not valid BSON."""
    try:
        return wire.record_id(record)
    except (BSONError, KeyError):
        return None


def _id_text(value: Any) -> str:
    """An _id for a log line: ObjectIds and strings as they are, others in Extended JSON."""
    if isinstance(value, ObjectId | str):
        return str(value)[:80]
    return json_util.dumps(value)[:80]


def _route(item: DecodedMessage, router: Router) -> None:
    """Records the router refuses are dead-lettered alone."""
    kept: list[wire.Record] = []
    for record in item.records:
        routed = router.route(record)
        if isinstance(routed, wire.Record):
            kept.append(routed)
        else:
            item.refused.append(routed)
    item.records = kept


def internal_error_reason(what: str, where: str, exc: Exception) -> str:
    """For the record's sender: what could not be done, and that it was ours, not theirs."""
    return f"the consumer {what}: internal error in the {where} ({type(exc).__name__})"


class WriteStage:
    """The writers: each owns its thread and its inbox lane (one lane unless partitioned)."""

    def __init__(self, inbox: Inbox, outbox: Outbox, writer: BatchWriter, writers: int) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self.writer = writer
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0
        self.last_activity = time.monotonic()
        self._threads = [
            threading.Thread(target=self._run, args=(lane,), name=f"writer-{lane}", daemon=True)
            for lane in range(writers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, deadline: float) -> None:
        join_by(self._threads, deadline)

    def drain(self) -> None:
        """Hands back at once what no writer started (shutting down)."""
        self._outbox.release(self._inbox.drain())

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._busy > 0

    def _run(self, lane: int) -> None:
        while not self._stopping.is_set():
            try:
                # One receive batch per bulk write. Merging waiting batches into one bulk
                # was measured (packed and one-record messages, MongoDB near and 10 ms
                # away) and did not help: packed batches are large already, and
                # one-record messages are limited by SQS, not MongoDB.
                messages = list(self._inbox.get(lane, timeout=0.2))
            except queue.Empty:
                continue
            with self._lock:
                self._busy += 1
            try:
                self._outbox.put(self.writer.contained(messages))
            finally:
                with self._lock:
                    self._busy -= 1
                    self.last_activity = time.monotonic()
