"""The format-2 bad-input corpus end to end: ElasticMQ -> the consumer process ->
FerretDB. Good records beside a bad one are written; every refused case is dead-lettered
with a reason in words for its sender; the consumer never crashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest.queues.base import REASON_ATTRIBUTE
from producer import wire
from tests.support.corpus import PYTHON_TEXT, Expect
from tests.support.corpus_bson import BSON_CASES, GOOD_COLLECTION, ODD_COLLECTION
from tests.support.harness import (
    Consumer,
    crashes,
    record_summary,
    running,
    send_bodies,
    wait_until,
)
from tests.support.queues import drain_queue


def _reasons(letters: list[dict[str, Any]]) -> list[str]:
    return [m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in letters]


def test_format_2_corpus_through_the_real_stack(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=20, max_receive_count=5)
    send_bodies(sqs_client, queue.url, [(case.body, case.attributes) for case in BSON_CASES])
    good = sum(len(case.good_ids) for case in BSON_CASES)
    dead = sum(case.expect is Expect.DEAD for case in BSON_CASES)
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20)
    letters: list[dict[str, Any]] = []

    def settled() -> bool:
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=0))
        odd = mongo_db[ODD_COLLECTION].count_documents({})
        store = sum(c.expect is Expect.STORE for c in BSON_CASES)
        return (
            mongo_db[GOOD_COLLECTION].count_documents({}) >= good
            and len(letters) + odd >= dead + store
        )

    with running([consumer]):
        assert wait_until(settled, 120, interval=1.0)
        wait_until(lambda: False, 2)  # anything more would be a duplicate dead letter
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=1))
        assert consumer.alive()
    record_summary(bad_inputs=len(BSON_CASES), crashes=crashes([consumer]))

    assert mongo_db[GOOD_COLLECTION].count_documents({}) == good
    assert all(REASON_ATTRIBUTE in m.get("MessageAttributes", {}) for m in letters)
    reasons = _reasons(letters)
    assert not [r for r in reasons if PYTHON_TEXT.search(r)], reasons
    for case in BSON_CASES:
        if case.expect is Expect.DEAD:
            assert any(case.reason in r for r in reasons), case.name
        elif case.expect is Expect.WRITTEN:
            assert all(
                mongo_db[ODD_COLLECTION].count_documents({"_id": i}) == 1 for i in case.ids
            ), case.name
    whole = {m["Body"] for m in letters}
    assert all(case.body in whole for case in BSON_CASES if case.whole)
    # A single record's letter is format 2 again, readable, and redrivable as it is.
    singles = [m for m in letters if m["Body"] not in {c.body for c in BSON_CASES}]
    assert singles and all(
        wire.format_of(m["MessageAttributes"]) == wire.BSON_RECORDS for m in singles
    )
    assert crashes([consumer]) == 0, consumer.log_text()[-3000:]
