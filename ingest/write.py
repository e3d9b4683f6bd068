"""Write stage: decode a batch, write its records in one bulk, settle each message.

A message is deleted only when every record in it is durable or dead-lettered;
if any of its records must be retried, the whole message comes back later (the
records already written collapse as duplicates then)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from bson import ObjectId

from ingest.breaker import SinkBreaker
from ingest.decode import bad_record_reason, decode_all
from ingest.errors import SinkUnavailable
from ingest.messages import (
    WRITTEN,
    DeadLetter,
    DecodedMessage,
    Message,
    Outcome,
    OutcomeKind,
    Settlement,
)
from ingest.metrics import Metrics
from ingest.route import Router
from ingest.sink import DocumentSink
from producer import wire
from producer.wire import BadRecord

log = logging.getLogger(__name__)

_SINGLE_RECORD_ATTRIBUTES = {
    wire.FORMAT_ATTRIBUTE: {"DataType": "String", "StringValue": wire.FORMAT_VERSION},
    wire.ENCODING_ATTRIBUTE: {"DataType": "String", "StringValue": wire.IDENTITY},
}


class WriteGate(Protocol):
    """Paces writes (the write ceiling). `acquire` blocks until `records` may be written."""

    def acquire(self, records: int) -> None: ...

    def observe(self, records: int, seconds: float, overloaded: bool) -> None: ...

    def max_bulk(self) -> int:
        """Largest bulk to write at once (0: no limit); larger batches are split."""
        ...


class OpenGate:
    """No ceiling."""

    def max_bulk(self) -> int:
        return 0

    def acquire(self, records: int) -> None:
        return None

    def observe(self, records: int, seconds: float, overloaded: bool) -> None:
        return None


class WriteStage:
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
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._breaker = breaker
        self._gate = gate or OpenGate()
        self._max_decoded_bytes = max_decoded_bytes
        self._clock = clock
        self._router = router or Router()
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
        try:
            if any(item.message.group_id for item in decoded):
                outcomes = self._write_groups(decoded)
            else:
                outcomes = self._write(records)
        except SinkUnavailable as exc:
            self._metrics.sink_failures.inc()
            self._breaker.record_failure(str(exc))
            log.warning("bulk write of %d records failed as a whole: %s", len(records), exc)
            return Settlement(release=list(messages))
        return self._settle(decoded, outcomes)

    def _write(self, records: list[wire.Record]) -> list[Outcome]:
        # Under a ceiling, bulks no larger than the burst keep MongoDB's load flat.
        size = self._gate.max_bulk() or max(1, len(records))
        outcomes: list[Outcome] = []
        for start in range(0, len(records), size):
            outcomes.extend(self._write_bulk(records[start : start + size]))
        return outcomes

    def _write_groups(self, decoded: list[DecodedMessage]) -> list[Outcome]:
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
            for index, outcome in zip(indexes, self._write_bulk(group, ordered=True), strict=True):
                outcomes[index] = outcome
        return outcomes

    def _write_bulk(self, records: list[wire.Record], *, ordered: bool = False) -> list[Outcome]:
        if not records:
            return []
        self._gate.acquire(len(records))
        started = time.perf_counter()
        try:
            write = self._sink.write_ordered if ordered else self._sink.write
            outcomes = write(records)
        except SinkUnavailable:
            self._gate.observe(len(records), time.perf_counter() - started, overloaded=True)
            raise
        elapsed = time.perf_counter() - started
        self.recent_write_seconds += 0.2 * (elapsed - self.recent_write_seconds)
        self._breaker.record_success()
        self._gate.observe(len(records), elapsed, overloaded=_overloaded(outcomes))
        self._observe(records, outcomes, elapsed)
        return outcomes

    def _observe(self, records: list[wire.Record], outcomes: list[Outcome], elapsed: float) -> None:
        m = self._metrics
        m.write_seconds.observe(elapsed)
        m.batch_records.observe(len(records))
        counts = {kind: 0 for kind in OutcomeKind}
        for outcome in outcomes:
            counts[outcome.kind] += 1
        m.records_written.inc(counts[OutcomeKind.WRITTEN])
        m.records_duplicate.inc(counts[OutcomeKind.DUPLICATE])
        m.records_retried.inc(counts[OutcomeKind.RETRY])
        oid = records[0].document.get("_id")
        if isinstance(oid, ObjectId):  # one sample per batch keeps the histogram cheap
            m.end_to_end_seconds.observe(max(0.0, self._clock() - oid.generation_time.timestamp()))

    def _settle(self, decoded: list[DecodedMessage], outcomes: list[Outcome]) -> Settlement:
        settlement = Settlement()
        position = 0
        for item in decoded:
            mine = outcomes[position : position + len(item.records)]
            position += len(item.records)
            _settle_message(item, mine, settlement)
        return settlement


def _route(item: DecodedMessage, router: Router) -> None:
    """Records the router refuses join the message's bad records (dead-lettered alone)."""
    kept: list[wire.Record] = []
    for record in item.records:
        routed = router.route(record)
        if isinstance(routed, str):
            item.bad_records.append(BadRecord(0, record.line, routed))
        else:
            kept.append(routed)
    item.records = kept


def _overloaded(outcomes: list[Outcome]) -> bool:
    return any(o.kind is OutcomeKind.RETRY for o in outcomes)


def _settle_message(item: DecodedMessage, outcomes: list[Outcome], settlement: Settlement) -> None:
    message = item.message
    if item.error is not None:
        letter = DeadLetter(message, message.body, item.error, message.attributes)
        settlement.dead_letters.append(letter)
        settlement.delete_after_dead_letter.append(message)
        return
    unsettled = [o for o in outcomes if not o.settled]
    if unsettled and not message.last_receive:
        settlement.retry.append(message)
        return
    letters = [_line_letter(message, bad.line, bad_record_reason(bad)) for bad in item.bad_records]
    for record, outcome in zip(item.records, outcomes, strict=True):
        if outcome.kind is OutcomeKind.REJECTED:
            letters.append(_line_letter(message, record.line, outcome.reason))
        elif not outcome.settled:  # the last receive: SQS would move it without a reason
            reason = f"still failing after {message.receive_count} receives: {outcome.reason}"
            letters.append(_line_letter(message, record.line, reason))
    if letters:
        settlement.dead_letters.extend(letters)
        settlement.delete_after_dead_letter.append(message)
    else:
        settlement.delete.append(message)


def _line_letter(message: Message, line: str, reason: str) -> DeadLetter:
    # One record line is itself a valid single-record message: redrive can resend it.
    return DeadLetter(message, line, reason, _SINGLE_RECORD_ATTRIBUTES)
