"""Write stage: writers take a batch from the inbox, decode it, write its records in one
bulk, and put the settlement of each message in the outbox.

A message is deleted only when every record in it is durable or dead-lettered; if any
of its records must be retried, the whole message comes back later (the records
already written collapse as duplicates then), except at its last receive, where the
records still failing are dead-lettered with the last failure. Stale records (a higher
version is stored) and duplicates are settled; a conflicting duplicate is too, unless
--on-conflict dead-letter sends it to the dead-letter queue."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bson import ObjectId, json_util
from bson.errors import BSONError

from ingest.errors import SinkUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.flow.ceiling import OpenGate, WriteGate
from ingest.flow.pacer import RecordsPerMessage
from ingest.logs import Throttled
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.decode import decode_all
from ingest.pipeline.messages import DecodedMessage, Settlement
from ingest.pipeline.route import Router
from ingest.queues.base import DeadLetter, Message
from ingest.sinks.base import WRITTEN, ConflictPolicy, DocumentSink, Outcome, OutcomeKind
from ingest.tracing import BulkTracing
from producer import wire

log = logging.getLogger(__name__)
_conflict_log = Throttled(log, interval=10.0)

# End-to-end samples from an _id time further ahead than this are clock skew (an
# ObjectId counts whole seconds, so a fresh one is at most a second behind, never ahead).
FUTURE_TOLERANCE_SECONDS: Final = 1.0
# ...or older than SQS keeps a message (14 days): an _id not stamped when it was sent
# (a backfill's derived ids, an application's own), not a record that waited that long.
MAX_PLAUSIBLE_LAG_SECONDS: Final = 14 * 86400.0


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
        on_conflict: ConflictPolicy = ConflictPolicy.COUNT,
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
        self._on_conflict = on_conflict
        self.recent_write_seconds = 0.0  # moving average of bulk write latency, for scaling
        self._handled_lock = threading.Lock()
        self._handled = 0  # records handed to the sink, ever: the replica board's write rate

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
        return _settle(decoded, outcomes, self._on_conflict)

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
                    f" (--on-conflict {self._on_conflict.value})"
                )

    def _end_to_end(self, first: wire.Record) -> None:
        """One sample per batch keeps the histogram cheap; clock skew is counted instead."""
        oid = _record_id(first)
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


def _settle(
    decoded: list[DecodedMessage], outcomes: list[Outcome], on_conflict: ConflictPolicy
) -> Settlement:
    settlement = Settlement()
    position = 0
    dead_kinds = {OutcomeKind.REJECTED}
    if on_conflict is ConflictPolicy.DEAD_LETTER:
        dead_kinds.add(OutcomeKind.CONFLICT)
    for item in decoded:
        mine = outcomes[position : position + len(item.records)]
        position += len(item.records)
        _settle_message(item, mine, settlement, dead_kinds)
    return settlement


def _settle_message(
    item: DecodedMessage,
    outcomes: list[Outcome],
    settlement: Settlement,
    dead_kinds: set[OutcomeKind],
) -> None:
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
        if outcome.kind in dead_kinds:
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
