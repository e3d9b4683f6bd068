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
from ingest.messages import DeadLetter, DecodedMessage, Message, Outcome, OutcomeKind, Settlement
from ingest.metrics import Metrics
from ingest.sink import DocumentSink
from producer import wire

log = logging.getLogger(__name__)

_SINGLE_RECORD_ATTRIBUTES = {
    wire.FORMAT_ATTRIBUTE: {"DataType": "String", "StringValue": wire.FORMAT_VERSION},
    wire.ENCODING_ATTRIBUTE: {"DataType": "String", "StringValue": wire.IDENTITY},
}


class WriteGate(Protocol):
    """Paces writes (the write ceiling). `acquire` blocks until `records` may be written."""

    def acquire(self, records: int) -> None: ...

    def observe(self, records: int, seconds: float, overloaded: bool) -> None: ...


class OpenGate:
    """No ceiling."""

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
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._breaker = breaker
        self._gate = gate or OpenGate()
        self._max_decoded_bytes = max_decoded_bytes
        self._clock = clock

    def process(self, messages: Sequence[Message]) -> Settlement:
        if self._breaker.is_open:
            # Don't spend the write on a store known to be down: hand the messages back.
            return Settlement(release=list(messages))
        decoded = decode_all(messages, self._max_decoded_bytes)
        records = [record for item in decoded for record in item.records]
        self._metrics.records_received.inc(len(records))
        try:
            outcomes = self._write(records)
        except SinkUnavailable as exc:
            self._metrics.sink_failures.inc()
            self._breaker.record_failure(str(exc))
            log.warning("bulk write of %d records failed as a whole: %s", len(records), exc)
            return Settlement(release=list(messages))
        return self._settle(decoded, outcomes)

    def _write(self, records: list[wire.Record]) -> list[Outcome]:
        if not records:
            return []
        self._gate.acquire(len(records))
        started = time.perf_counter()
        try:
            outcomes = self._sink.write(records)
        except SinkUnavailable:
            self._gate.observe(len(records), time.perf_counter() - started, overloaded=True)
            raise
        elapsed = time.perf_counter() - started
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


def _overloaded(outcomes: list[Outcome]) -> bool:
    return any(o.kind is OutcomeKind.RETRY for o in outcomes)


def _settle_message(item: DecodedMessage, outcomes: list[Outcome], settlement: Settlement) -> None:
    message = item.message
    if item.error is not None:
        letter = DeadLetter(message, message.body, item.error, message.attributes)
        settlement.dead_letters.append(letter)
        settlement.delete_after_dead_letter.append(message)
        return
    if any(not outcome.settled for outcome in outcomes):
        settlement.retry.append(message)
        return
    letters = [_line_letter(message, bad.line, bad_record_reason(bad)) for bad in item.bad_records]
    letters += [
        _line_letter(message, record.line, outcome.reason)
        for record, outcome in zip(item.records, outcomes, strict=True)
        if outcome.kind is OutcomeKind.REJECTED
    ]
    if letters:
        settlement.dead_letters.extend(letters)
        settlement.delete_after_dead_letter.append(message)
    else:
        settlement.delete.append(message)


def _line_letter(message: Message, line: str, reason: str) -> DeadLetter:
    # One record line is itself a valid single-record message: redrive can resend it.
    return DeadLetter(message, line, reason, _SINGLE_RECORD_ATTRIBUTES)
