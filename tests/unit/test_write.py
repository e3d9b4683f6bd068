"""Write stage (ingest/pipeline/write.py): per-record outcomes become per-message
settlements; FIFO groups are written in order; bulks keep to the write gate; one
end-to-end sample per batch, clock skew counted apart; the writers' threads."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from bson import ObjectId

from ingest.flow.breaker import SinkBreaker
from ingest.flow.ceiling import Ceiling, RateGate
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.write import BatchWriter, WriteStage
from ingest.queues.base import ATTEMPTS_ATTRIBUTE, Message
from ingest.sinks.base import Outcome, OutcomeKind, WriteMode, retry
from ingest.sinks.memory import MemorySink
from producer import wire
from tests.support.clocks import FakeClock


def message(*lines: str, mid: str = "m1") -> Message:
    return Message("memory://q", mid, f"r-{mid}", "\n".join(lines))


def line(n: int, collection: str = "events") -> str:
    return wire.encode_record(collection, {"_id": ObjectId(), "n": n})


def stage(sink: MemorySink) -> BatchWriter:
    return BatchWriter(sink, Metrics(), SinkBreaker())


def test_good_messages_are_deleted_after_the_write() -> None:
    sink = MemorySink()
    settlement = stage(sink).process([message(line(1), line(2)), message(line(3), mid="m2")])
    assert [m.message_id for m in settlement.delete] == ["m1", "m2"]
    assert sink.count("events") == 3 and not settlement.dead_letters


def test_an_unreadable_message_is_dead_lettered_whole_and_others_written() -> None:
    sink = MemorySink()
    settlement = stage(sink).process([message("not json", mid="bad"), message(line(1))])
    assert [letter.body for letter in settlement.dead_letters] == ["not json"]
    assert "not valid JSON" in settlement.dead_letters[0].reason
    assert [m.message_id for m in settlement.delete_after_sends] == ["bad"]
    assert [m.message_id for m in settlement.delete] == ["m1"] and sink.count() == 1


def test_a_bad_line_in_a_packed_message_is_dead_lettered_alone() -> None:
    sink = MemorySink()
    bad = '{"c":"system.x","d":{"_id":1}}'
    settlement = stage(sink).process([message(line(1), bad, line(2))])
    assert sink.count() == 2
    (letter,) = settlement.dead_letters
    assert letter.body == bad and letter.reason.startswith("line 2: ")
    assert wire.attribute_value(letter.attributes, wire.ENCODING_ATTRIBUTE) == wire.IDENTITY
    assert [m.message_id for m in settlement.delete_after_sends] == ["m1"]


def test_records_the_sink_rejects_are_dead_lettered_with_its_reason() -> None:
    sink = MemorySink(reject=lambda r: "too big" if r.document["n"] == 2 else None)
    settlement = stage(sink).process([message(line(1), line(2))])
    assert [letter.reason for letter in settlement.dead_letters] == ["too big"]
    assert sink.count() == 1


def test_a_retryable_record_goes_back_alone_with_its_attempt_and_its_message_is_deleted() -> None:
    class Flaky(MemorySink):
        def _write_one(self, record: wire.Record):  # type: ignore[no-untyped-def]
            from ingest.sinks.base import retry

            return (
                retry("write conflict") if record.document["n"] == 2 else super()._write_one(record)
            )

    settlement = stage(Flaky()).process(
        [message(line(1), line(2), "oops"), message(line(3), mid="m2")]
    )
    (resend,) = settlement.resends
    assert resend.source.message_id == "m1" and '"n":2' in resend.body
    assert wire.attribute_value(resend.attributes, ATTEMPTS_ATTRIBUTE) == "1"
    # Deleted once the retried record and the bad line are sent on: nothing waits for them.
    assert [m.message_id for m in settlement.delete_after_sends] == ["m1"]
    assert [letter.body for letter in settlement.dead_letters] == ["oops"]
    assert [m.message_id for m in settlement.delete] == ["m2"] and not settlement.retry


def test_a_sink_outage_releases_everything_and_opens_the_breaker() -> None:
    sink = MemorySink()
    sink.unavailable = True
    breaker = SinkBreaker()
    write = BatchWriter(sink, Metrics(), breaker)
    settlement = write.process([message(line(1)), message("garbage", mid="m2")])
    assert breaker.is_open
    assert [m.message_id for m in settlement.release] == ["m1", "m2"]
    assert not settlement.dead_letters and not settlement.delete
    # While open, batches go straight back without touching the sink.
    sink.unavailable = False
    assert write.process([message(line(2), mid="m3")]).release
    assert sink.write_calls == 0


def _nul(record: wire.Record) -> str | None:
    return "refused by the database: NUL in a string" if "\\u0000" in str(record.source) else None


def _packed_with_poison(good: int) -> Message:
    poison = wire.encode_record("events", {"_id": ObjectId(), "n": -1, "s": "a\x00b"})
    lines = [line(n) for n in range(good)]
    lines.insert(good // 3, poison)
    return message(*lines)


def test_a_record_that_fails_its_whole_bulk_is_found_and_the_rest_are_written() -> None:
    sink = MemorySink(refuse_bulk=_nul)
    settlement = stage(sink).process([_packed_with_poison(300), message(line(1), mid="m2")])
    assert sink.count() == 301  # 300 packed beside the poison, and the other message
    (letter,) = settlement.dead_letters
    assert '"n":-1' in letter.body and letter.reason == "refused by the database: NUL in a string"
    assert [m.message_id for m in settlement.delete_after_sends] == ["m1"]
    assert [m.message_id for m in settlement.delete] == ["m2"] and not settlement.release
    assert sink.write_calls <= 2 * 9 + 1  # bisection: about 2·log2(n) bulks, not n


def test_a_store_that_hangs_up_on_one_record_but_still_answers_rejects_only_it() -> None:
    sink = MemorySink(refuse_bulk=_nul, hang_up=True)
    breaker = SinkBreaker()
    settlement = BatchWriter(sink, Metrics(), breaker).process([_packed_with_poison(40)])
    assert sink.count() == 40 and len(settlement.dead_letters) == 1 and not breaker.is_open


def test_a_store_that_hangs_up_and_stops_answering_is_an_outage() -> None:
    class Dying(MemorySink):
        def _check_bulk(self, records):  # type: ignore[no-untyped-def]
            self.unavailable = True  # hangs up, and ping fails from now on
            super()._check_bulk(records)

    breaker = SinkBreaker()
    settlement = BatchWriter(Dying(refuse_bulk=_nul, hang_up=True), Metrics(), breaker).process(
        [_packed_with_poison(10)]
    )
    assert breaker.is_open and len(settlement.release) == 1 and not settlement.dead_letters


def test_ordered_isolation_keeps_the_group_in_order() -> None:
    sink = MemorySink(refuse_bulk=_nul)
    records = [wire.decode_line(line(n)) for n in range(6)]
    records.insert(2, wire.decode_line(wire.encode_record("events", {"_id": 9, "s": "\x00"})))
    outcomes = sink.write_ordered(records)
    assert [o.kind.value for o in outcomes] == ["written"] * 2 + ["rejected"] + ["written"] * 4
    assert sink.count() == 6


# ------------------------------------------------------------------ FIFO order


def _grouped(*lines: str, mid: str, group: str) -> Message:
    return Message("memory://q.fifo", mid, f"r-{mid}", "\n".join(lines), group_id=group)


def _line(collection: str, **fields: Any) -> str:
    return wire.encode_record(collection, {"_id": fields.pop("_id", None) or ObjectId(), **fields})


def test_fifo_group_after_a_failure_is_not_applied_and_comes_back_in_order() -> None:
    oid = ObjectId()
    calls: list[int] = []

    class FailsOnce(MemorySink):
        def _write_one(self, record: wire.Record):  # type: ignore[no-untyped-def]
            calls.append(record.document["v"])
            if record.document["v"] == 2 and calls.count(2) == 1:
                return retry("write conflict")
            return super()._write_one(record)

    sink = FailsOnce(WriteMode.REPLACE)
    stage = BatchWriter(sink, Metrics(), SinkBreaker())
    batch = [_grouped(_line("e", _id=oid, v=v), mid=f"m{v}", group="g") for v in (1, 2, 3)]
    batch.append(_grouped(_line("e", v=9), mid="other", group="h"))
    settlement = stage.process(batch)
    assert [m.message_id for m, _ in settlement.retry] == ["m2", "m3"]
    assert calls[:3] == [1, 2, 9]  # 3 was never applied before 2
    assert {m.message_id for m in settlement.delete} == {"m1", "other"}
    again = stage.process([m for m, _ in settlement.retry])
    assert [m.message_id for m in again.delete] == ["m2", "m3"]
    (stored,) = (d for d in sink.collections["e"].values() if d["_id"] == oid)
    assert stored["v"] == 3


def test_memory_sink_ordered_write_stops_at_first_retry() -> None:
    class Flaky(MemorySink):
        def _write_one(self, record: wire.Record):  # type: ignore[no-untyped-def]
            return retry("busy") if record.document["n"] == 1 else super()._write_one(record)

    records = [wire.decode_line(_line("e", n=n)) for n in range(3)]
    kinds = [o.kind for o in Flaky().write_ordered(records)]
    assert kinds == [OutcomeKind.WRITTEN, OutcomeKind.RETRY, OutcomeKind.BLOCKED]


# ------------------------------------------------------------------ the write gate


class CountingSink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.bulks: list[int] = []

    def write(self, records: Sequence[wire.Record]) -> list[Outcome]:
        self.bulks.append(len(records))
        return super().write(records)


def _message(count: int, mid: str) -> Message:
    lines = [wire.encode_record("events", {"_id": ObjectId(), "n": n}) for n in range(count)]
    return Message("memory://q", mid, f"r-{mid}", "\n".join(lines))


def test_write_stage_splits_batches_to_the_gates_bulk_size_and_paces_them() -> None:
    clock = FakeClock()
    gate = RateGate(Ceiling(1000, burst=40), clock=clock, sleep=clock.sleep)
    sink = CountingSink()
    stage = BatchWriter(sink, Metrics(), SinkBreaker(), gate)
    started = clock.now
    settlement = stage.process([_message(100, "m1"), _message(30, "m2")])
    assert sink.bulks == [40, 40, 40, 10]
    assert sink.count("events") == 130 and len(settlement.delete) == 2
    assert clock.now - started == pytest.approx((130 - 40) / 1000)


def test_write_stage_without_a_gate_handles_a_batch_of_only_bad_records() -> None:
    sink = CountingSink()
    no_id = wire.encode_record("events", {"n": 1})
    settlement = BatchWriter(sink, Metrics(), SinkBreaker()).process([message(no_id)])
    assert sink.bulks == [] and len(settlement.dead_letters) == 1


# ------------------------------------------------------------------ end to end


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _batch_from(oid: ObjectId, now: float) -> tuple[Metrics, float]:
    metrics = Metrics()
    writer = BatchWriter(MemorySink(), metrics, SinkBreaker(), clock=lambda: now)
    body = wire.encode_record("events", {"_id": oid, "n": 1})
    writer.process([Message("memory://q", "m", "r", body)])
    return metrics, sample(metrics, "ingest_end_to_end_seconds_count")


def test_end_to_end_samples_from_the_future_or_long_ago_count_as_skew() -> None:
    now = time.time()
    seventy_one = ObjectId.from_datetime(datetime.datetime(1971, 6, 1, tzinfo=datetime.UTC))
    old, observed = _batch_from(seventy_one, now)
    assert (
        observed == 0
        and sample(old, "ingest_end_to_end_skewed_samples_total", direction="old") == 1
    )
    ahead = ObjectId.from_datetime(datetime.datetime.fromtimestamp(now + 3600, datetime.UTC))
    future, observed = _batch_from(ahead, now)
    assert observed == 0
    assert sample(future, "ingest_end_to_end_skewed_samples_total", direction="future") == 1
    fresh, observed = _batch_from(ObjectId.from_datetime(
        datetime.datetime.fromtimestamp(now - 7, datetime.UTC)), now)  # fmt: skip
    assert observed == 1 and 6.0 <= sample(fresh, "ingest_end_to_end_seconds_sum") <= 8.0
    assert sample(fresh, "ingest_end_to_end_skewed_samples_total", direction="old") == 0
    # Both series exist before any skew, so a dashboard panel has data from the start.
    assert sample(fresh, "ingest_end_to_end_skewed_samples_total", direction="future") == 0


# ------------------------------------------------------------------ the writers


@pytest.mark.timeout(30)  # an outbox.get() that finds nothing would block
def test_drain_hands_back_at_once_what_no_writer_started() -> None:
    inbox, outbox = Inbox(4), Outbox()
    stage = WriteStage(inbox, outbox, BatchWriter(MemorySink(), Metrics(), SinkBreaker()), 1)
    never = threading.Event()
    waiting = [message(line(1)), message(line(2), mid="m2")]
    assert inbox.put(waiting[:1], never, lambda: None) == []
    assert inbox.put(waiting[1:], never, lambda: None) == []
    stage.drain()  # the writers were never started: nothing was taken
    handed_back = outbox.get()
    assert handed_back is not None and handed_back.release == waiting
    assert inbox.empty()
