"""Write stage: writers take a batch from the inbox, decode it, write its records in one
bulk, and put the settlement of each message in the outbox.

A message is deleted only when every record in it is durable or dead-lettered; if any
of its records must be retried, the whole message comes back later (the records
already written collapse as duplicates then), except at its last receive, where the
records still failing are dead-lettered with the last failure."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bson import ObjectId
from bson.errors import BSONError

from ingest.errors import SinkUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.flow.ceiling import OpenGate, WriteGate
from ingest.flow.pacer import RecordsPerMessage
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.decode import decode_all
from ingest.pipeline.messages import DecodedMessage, Settlement
from ingest.pipeline.route import Router
from ingest.queues.base import DeadLetter, Message
from ingest.sinks.base import WRITTEN, DocumentSink, Outcome, OutcomeKind
from ingest.tracing import BulkTracing
from producer import wire

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriteOptions:
    max_decoded_bytes: int = wire.DEFAULT_MAX_DECODED_BYTES


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
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._breaker = breaker
        self._gate = gate or OpenGate()
        self._max_decoded_bytes = max_decoded_bytes
        self._clock = clock
        self._router = router or Router()
        self._per_message = per_message or RecordsPerMessage()
        self._tracing = BulkTracing()
        self.recent_write_seconds = 0.0  # moving average of bulk write latency, for scaling

    def process(self, messages: Sequence[Message]) -> Settlement:
        if self._breaker.is_open:
            # Don't spend the write on a store known to be down: hand the messages back.
            return Settlement(release=list(messages))
        decoded = decode_all(messages, self._max_decoded_bytes)
        if not self._router.is_open:
            for item in decoded:
                _route(item, self._router)
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
            return Settlement(release=list(messages))
        return _settle(decoded, outcomes)

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
        position = 0
        for item in decoded:
            key = item.message.group_id or ""
            groups.setdefault(key, []).extend(range(position, position + len(item.records)))
            position += len(item.records)
        records = [record for item in decoded for record in item.records]
        outcomes: list[Outcome] = [WRITTEN] * len(records)
        for indexes in groups.values():
            group = [records[i] for i in indexes]
            for index, outcome in zip(
                indexes, self._write_bulk(group, waits, ordered=True), strict=True
            ):
                outcomes[index] = outcome
        return outcomes

    def _write_bulk(
        self, records: list[wire.Record], waits: list[float], *, ordered: bool = False
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
        elapsed = time.perf_counter() - started
        self.recent_write_seconds += 0.2 * (elapsed - self.recent_write_seconds)
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
        try:
            oid = wire.record_id(records[0])
        except (BSONError, KeyError):  # a document the store refused as not valid BSON
            return
        if isinstance(oid, ObjectId):  # one sample per batch keeps the histogram cheap
            m.end_to_end_seconds.observe(max(0.0, self._clock() - oid.generation_time.timestamp()))


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


def _settle(decoded: list[DecodedMessage], outcomes: list[Outcome]) -> Settlement:
    settlement = Settlement()
    position = 0
    for item in decoded:
        mine = outcomes[position : position + len(item.records)]
        position += len(item.records)
        _settle_message(item, mine, settlement)
    return settlement


def _settle_message(item: DecodedMessage, outcomes: list[Outcome], settlement: Settlement) -> None:
    message = item.message
    if item.error is not None:
        letter = DeadLetter(message, message.body, item.error, message.attributes)
        settlement.dead_letters.append(letter)
        settlement.delete_after_dead_letter.append(message)
        return
    if any(not o.settled for o in outcomes) and not message.last_receive:
        settlement.retry.append(message)
        return
    letters = [_bad_letter(message, bad) for bad in item.bad_records]
    letters += [_letter(message, refusal.record, refusal.reason) for refusal in item.refused]
    for record, outcome in zip(item.records, outcomes, strict=True):
        if outcome.kind is OutcomeKind.REJECTED:
            letters.append(_letter(message, record, outcome.reason))
        elif not outcome.settled:  # the last receive: SQS would move it without a reason
            reason = f"still failing after {message.receive_count} receives: {outcome.reason}"
            letters.append(_letter(message, record, reason))
    if letters:
        settlement.dead_letters.extend(letters)
        settlement.delete_after_dead_letter.append(message)
    else:
        settlement.delete.append(message)


def _letter(message: Message, record: wire.Record | wire.BadRecord, reason: str) -> DeadLetter:
    """One record as a message of its own: a redrive sends it back as it came."""
    body, attributes = wire.record_message(record)
    return DeadLetter(message, body, reason, attributes)


def _bad_letter(message: Message, bad: wire.BadRecord) -> DeadLetter:
    where = f"line {bad.number}" if isinstance(bad.source, str) else f"record {bad.number}"
    if bad.rest_unreadable:  # what follows cannot be found: the message goes whole
        return DeadLetter(message, message.body, f"{where}: {bad.reason}", message.attributes)
    return _letter(message, bad, f"{where}: {bad.reason}")


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
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

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
                self._outbox.put(self.writer.process(messages))
            except Exception:  # a bug must not kill the writer or lose the messages
                log.exception("write stage failed; handing %d messages back", len(messages))
                self._outbox.release(messages)
            finally:
                with self._lock:
                    self._busy -= 1
                    self.last_activity = time.monotonic()
