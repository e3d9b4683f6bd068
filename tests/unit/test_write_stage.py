"""Write stage: per-record outcomes become per-message settlements."""

from __future__ import annotations

from bson import ObjectId

from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import ATTEMPTS_ATTRIBUTE, Message
from ingest.sinks.memory import MemorySink
from producer import wire


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
