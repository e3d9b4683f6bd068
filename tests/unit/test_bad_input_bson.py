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
from ingest.queues.base import Message
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
    if case.expect is Expect.DEAD:
        assert reasons and all(reasons), case.name
        assert any(case.reason in str(r) for r in reasons), reasons
        assert any(b.rest_unreadable for b in decoded.bad_records) == case.whole
    elif case.expect is Expect.WRITTEN:
        assert not reasons, reasons
        odd = {wire.record_id(r) for r in decoded.records if r.collection != GOOD_COLLECTION}
        assert odd == set(case.ids)
    else:  # STORE: readable here; the store decides
        assert not decoded.error


def test_write_stage_settles_the_whole_format_2_corpus_in_one_batch() -> None:
    messages = [_message(case, n) for n, case in enumerate(BSON_CASES)]
    sink = MemorySink()
    settlement = BatchWriter(sink, Metrics(), SinkBreaker()).process(messages)
    assert sink.count(GOOD_COLLECTION) == sum(len(c.good_ids) for c in BSON_CASES)
    assert all(letter.reason for letter in settlement.dead_letters)
    assert not settlement.retry and not settlement.release
    whole = {letter.body for letter in settlement.dead_letters}
    for case in BSON_CASES:
        if case.whole or (case.expect is Expect.DEAD and not case.good_ids):
            assert case.body in whole, case.name  # dead-lettered as it came
    for letter in settlement.dead_letters:  # a single record's letter is itself format 2
        if letter.body not in {c.body for c in BSON_CASES}:
            assert wire.format_of(letter.attributes) == wire.BSON_RECORDS
            assert "(unreadable" not in wire.readable(letter.body, letter.attributes)


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
