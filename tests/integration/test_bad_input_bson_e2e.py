"""The format-2 bad-input corpus end to end: ElasticMQ -> the consumer process ->
FerretDB. Good records beside a bad one are written; every refused case is dead-lettered
with a reason in words for its sender (one letter per refused message, found by its
source message id); the consumer never crashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bson.codec_options import CodecOptions

from ingest.queues.base import REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE
from producer import wire
from tests.support.corpus import PYTHON_TEXT, is_ferretdb, letter_reason
from tests.support.corpus_bson import BSON_CASES, GOOD_COLLECTION, ODD_COLLECTION
from tests.support.harness import (
    Consumer,
    crashes,
    record_summary,
    running,
    send_each,
    wait_until,
)
from tests.support.queues import drain_queue


def _reason(letter: dict[str, Any]) -> str:
    return str(letter["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"])


def test_format_2_corpus_through_the_real_stack(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=20, max_receive_count=5)
    ferretdb = is_ferretdb(mongo_db)
    message_ids = send_each(sqs_client, queue.url, [(c.body, c.attributes) for c in BSON_CASES])
    cases = dict(zip(message_ids, BSON_CASES, strict=True))
    refused = {m: case for m, case in cases.items() if letter_reason(case, ferretdb)}
    good = sum(len(case.good_ids) for case in BSON_CASES)
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20)
    letters: list[dict[str, Any]] = []

    def settled() -> bool:
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=0))
        written = mongo_db[GOOD_COLLECTION].count_documents({})
        return written >= good and len(letters) >= len(refused)

    with running([consumer]):
        assert wait_until(settled, 120, interval=1.0)
        wait_until(lambda: False, 2)  # anything more would be a duplicate dead letter
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=1))
        assert consumer.alive()
    record_summary(bad_inputs=len(BSON_CASES), crashes=crashes([consumer]))

    assert mongo_db[GOOD_COLLECTION].count_documents({}) == good
    assert all(REASON_ATTRIBUTE in m.get("MessageAttributes", {}) for m in letters)
    assert not [_reason(m) for m in letters if PYTHON_TEXT.search(_reason(m))]
    by_source: dict[str, list[dict[str, Any]]] = {}
    for m in letters:
        source = m["MessageAttributes"][SOURCE_MESSAGE_ATTRIBUTE]["StringValue"]
        by_source.setdefault(source, []).append(m)
    for message_id, case in refused.items():
        mine = by_source.pop(message_id, [])
        assert len(mine) == 1, (case.name, [_reason(m) for m in mine])
        (letter,) = mine
        assert letter_reason(case, ferretdb) in _reason(letter), (case.name, _reason(letter))
        if case.whole or not case.good_ids:
            assert letter["Body"] == case.body, case.name  # dead-lettered as it came
        else:  # a single record's letter is format 2 again, readable, redrivable as it is
            assert wire.format_of(letter["MessageAttributes"]) == wire.BSON_RECORDS, case.name
            assert "(unreadable" not in wire.readable(letter["Body"], letter["MessageAttributes"])
    assert not by_source, "letters from messages that hold nothing refused"
    # Every odd record not refused is stored once; nothing else is in its collection.
    kept = [c for c in BSON_CASES if not letter_reason(c, ferretdb)]
    for case in kept:
        for i in case.ids:
            assert mongo_db[ODD_COLLECTION].count_documents({"_id": i}) == 1, case.name
    known = {i for c in BSON_CASES for i in c.ids}
    readable = CodecOptions(unicode_decode_error_handler="surrogateescape")
    odd = mongo_db.get_collection(ODD_COLLECTION, codec_options=readable)
    ids = [d["_id"] for d in odd.find({}, {"_id": 1})]
    unnamed = [i for i in ids if i not in known]  # the invalid UTF-8 _id, as the server keeps it
    assert len(ids) == sum(len(c.ids) for c in kept) + 1 and len(unnamed) == 1, ids
    assert crashes([consumer]) == 0, consumer.log_text()[-3000:]
