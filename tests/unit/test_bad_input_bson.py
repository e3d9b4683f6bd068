"""The format-2 corpus through the decoder and the write stage (in memory)."""

from __future__ import annotations

import random

import bson
import pytest
from bson import ObjectId

from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.decode import decode
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import DeadLetter, Message
from ingest.sinks.memory import MemorySink
from producer import wire
from producer.wire import bsonrecords
from tests.support.corpus import Expect
from tests.support.corpus_bson import BSON_CASES, GOOD_COLLECTION, BsonCase


def _message(case: BsonCase, n: int = 0) -> Message:
    return Message("memory://q", f"m{n}", f"r{n}", case.body, case.attributes)


@pytest.mark.parametrize("case", BSON_CASES, ids=lambda case: case.name)
def test_each_case_gets_its_outcome_and_good_neighbours_are_kept(case: BsonCase) -> None:
    decoded = decode(_message(case))
    good = {wire.record_id(r) for r in decoded.records if r.collection == GOOD_COLLECTION}
    assert good == set(case.good_ids)
    reasons = [decoded.error] if decoded.error else [b.reason for b in decoded.bad_records]

    def odd() -> set[object]:
        return {wire.record_id(r) for r in decoded.records if r.collection != GOOD_COLLECTION}

    if case.expect is Expect.DEAD:
        (reason,) = reasons  # its own reason, once: one bad record, or the whole message
        assert reason and case.reason in reason, reasons
        assert any(b.rest_unreadable for b in decoded.bad_records) == case.whole
    elif case.expect is Expect.WRITTEN:
        assert not reasons, reasons
        assert odd() == set(case.ids)
    else:  # STORE: readable here, every record of it; the store decides
        assert not reasons, reasons
        if case.ids:  # (an _id that is not valid UTF-8 cannot be read back to compare)
            assert set(case.ids) <= odd()


def test_write_stage_settles_the_whole_format_2_corpus_in_one_batch() -> None:
    messages = [_message(case, n) for n, case in enumerate(BSON_CASES)]
    sink = MemorySink()
    settlement = BatchWriter(sink, Metrics(), SinkBreaker()).process(messages)
    assert sink.count(GOOD_COLLECTION) == sum(len(c.good_ids) for c in BSON_CASES)
    assert all(letter.reason for letter in settlement.dead_letters)
    assert not settlement.retry and not settlement.release
    letters: dict[str, list[DeadLetter]] = {}
    for letter in settlement.dead_letters:
        letters.setdefault(letter.source.message_id, []).append(letter)
    for n, case in enumerate(BSON_CASES):
        mine = letters.pop(f"m{n}", [])
        if case.expect is not Expect.DEAD:
            assert mine == [], case.name  # written, or stored by this sink
            continue
        # One letter with its own reason. The lying frame reads as a record the store
        # refuses before the rest turns unreadable: the message goes whole, once, and
        # that record is not sent again beside it.
        assert len(mine) == 1, case.name
        assert case.reason and case.reason in mine[0].reason, (case.name, mine[0].reason)
        if case.whole or not case.good_ids:
            assert mine[0].body == case.body, case.name  # dead-lettered as it came
        else:  # a single record's letter is itself format 2
            assert wire.format_of(mine[0].attributes) == wire.BSON_RECORDS
            assert "(unreadable" not in wire.readable(mine[0].body, mine[0].attributes)
    assert letters == {}


def test_many_records_in_one_body_get_the_verdict_each_gets_alone() -> None:
    """The body-wide '$' scan must blame only the record that holds the '$' key, wherever
    it sits among its neighbours, and '$' bytes in binary values must blame nobody."""
    shapes = [
        {"n": 1},
        {"$set": {"a": 1}},
        {"price": "$5", "d": {"k": "$"}},
        {"oid": ObjectId(b"$$$$$$$$$$$$"), "f": 36.0},
        {"a": {"$foo": 1}},
        {"deep": {"x": [{"$y": 1}]}},
    ]
    rng = random.Random(5)
    documents = [bson.encode({"_id": n, **rng.choice(shapes)}) for n in range(300)]
    body = bsonrecords.pack([("events", document, None) for document in documents])
    items = bsonrecords.unpack(body)
    assert len(items) == len(documents)
    for document, item in zip(documents, items, strict=True):
        alone = bsonrecords.raw_problem(document)
        assert isinstance(item, wire.BadRecord) == (alone is not None), bson.decode(document)
        assert item.source == document
