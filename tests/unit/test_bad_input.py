"""Every kind of bad input in the corpus gets its outcome from the decoder and the
write stage: a dead letter with a reason, or a write; never an exception, and the
good records beside it (same batch, same packed message) are still written."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.decode import decode
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import Message
from ingest.sinks.memory import MemorySink
from producer import wire
from tests.support.corpus import CASES, GOOD_COLLECTION, Case, Expect, attrs

LINE_CASES = [case for case in CASES if case.line]


def _message(body: str, attributes: dict[str, Any] | None = None, n: int = 0) -> Message:
    return Message("q", f"m{n}", f"r{n}", body, attributes or {})


def _good_lines(tag: str, count: int = 2) -> list[str]:
    return [wire.encode_record(GOOD_COLLECTION, {"_id": f"{tag}-{i}"}) for i in range(count)]


def test_corpus_has_at_least_forty_kinds_of_bad_input() -> None:
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names)
    assert sum(case.expect is Expect.DEAD for case in CASES) >= 40
    # Each refused case names its own reason (an empty one would match any).
    assert all(case.reason for case in CASES if case.expect is Expect.DEAD)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_decoder_gives_each_case_its_outcome(case: Case) -> None:
    decoded = decode(_message(case.body, case.attributes))
    if case.expect is Expect.DEAD:
        assert decoded.error is not None, "must be refused as a whole message"
        assert case.reason in decoded.error
        assert not decoded.records
    else:
        assert decoded.error is None, decoded.error
        assert not decoded.bad_records
        ids = [record.document["_id"] for record in decoded.records]
        if case.ids:
            assert set(map(repr, ids)) == set(map(repr, case.ids))


@pytest.mark.parametrize("encoding", [wire.IDENTITY, wire.GZIP, wire.ZSTD])
@pytest.mark.parametrize("case", LINE_CASES, ids=lambda case: case.name)
def test_bad_line_between_good_lines_is_refused_alone(case: Case, encoding: str) -> None:
    before, after = _good_lines("before", 1), _good_lines("after", 2)
    text = wire.join_lines([*before, case.body, *after])
    decoded = decode(_message(wire.compress_body(text, encoding), attrs(encoding)))
    assert decoded.error is None
    good_ids = {r.document["_id"] for r in decoded.records if r.collection == GOOD_COLLECTION}
    assert good_ids == {"before-0", "after-0", "after-1"}
    if case.expect is Expect.DEAD:
        [bad] = decoded.bad_records
        assert bad.number == 2 and bad.source == case.body
        assert case.reason in bad.reason
    else:
        assert not decoded.bad_records


def test_write_stage_settles_the_whole_corpus_in_one_batch() -> None:
    """All cases in one batch beside good messages: nothing raises, good records land,
    every refused case becomes exactly one dead letter with a reason."""
    good = [_message(line, n=1000 + i) for i, line in enumerate(_good_lines("solo", 5))]
    packed = _message(wire.join_lines(_good_lines("packed", 3)), n=2000)
    cases = [_message(case.body, case.attributes, n) for n, case in enumerate(CASES)]
    sink = MemorySink()
    stage = BatchWriter(sink, Metrics(), SinkBreaker())

    settlement = stage.process([*good[:2], *cases, packed, *good[2:]])

    assert sink.count(GOOD_COLLECTION) == 8
    dead = [case.body for case in CASES if case.expect is Expect.DEAD]
    store = {case.body for case in CASES if case.expect is Expect.STORE}
    letters = [letter.body for letter in settlement.dead_letters]
    # What the driver cannot encode (an integer past 64 bits...) the sink refuses alone.
    assert sorted(b for b in letters if b not in store) == sorted(dead)
    assert [b for b in letters if b in store] == [
        '{"c":"corpus_odd","d":{"_id":"i65","v":18446744073709551616}}',
        '{"c":"corpus_odd","d":{"_id":"sur","v":"\\ud800"}}',
    ]
    assert all(letter.reason for letter in settlement.dead_letters)
    assert not settlement.retry and not settlement.release
    handled = settlement.delete + settlement.delete_after_sends
    assert len(handled) == len(CASES) + 6
