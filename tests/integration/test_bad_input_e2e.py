"""The bad-input corpus end to end: ElasticMQ -> the consumer process -> FerretDB.
Every refused case lands in the dead-letter queue once per time it was sent, with
a reason; good records beside them (same receive batch, same packed message) are
written; the consumer never crashes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from ingest.queues.base import REASON_ATTRIBUTE
from producer import wire
from tests.support.corpus import CASES, GOOD_COLLECTION, PYTHON_TEXT, Case, Expect, attrs
from tests.support.harness import (
    Body,
    Consumer,
    crashes,
    record_summary,
    running,
    send_bodies,
    wait_until,
)
from tests.support.queues import drain_queue

SENDABLE = [case for case in CASES if case.sendable]


def _good(tag: str, count: int) -> list[str]:
    return [wire.encode_record(GOOD_COLLECTION, {"_id": f"{tag}-{n}"}) for n in range(count)]


def _bodies() -> tuple[list[Body], Counter[str], int]:
    """Each case alone, each line case packed between good lines (plain and zstd),
    and good single-record messages in between. Returns bodies, expected dead
    letters by body, and the number of good records."""
    bodies: list[Body] = []
    dead: Counter[str] = Counter()
    good = 0
    for n, case in enumerate(SENDABLE):
        bodies.append((case.body, case.attributes))
        bodies.append((_good(f"solo{n}", 1)[0], {}))
        good += 1
        if case.expect is Expect.DEAD:
            dead[case.body] += 1
        if case.line:
            encoding = wire.ZSTD if n % 2 else wire.IDENTITY
            text = wire.join_lines([*_good(f"pre{n}", 2), case.body, *_good(f"post{n}", 2)])
            bodies.append((wire.compress_body(text, encoding), attrs(encoding)))
            good += 4
            if case.expect is Expect.DEAD:
                dead[case.body] += 1
    return bodies, dead, good


def _stored_or_dead(case: Case, db: Any, dead_bodies: Counter[str]) -> bool:
    """A STORE case is either in MongoDB or dead-lettered (never both, never neither)."""
    stored = all(db.corpus_odd.count_documents({"_id": i}) == 1 for i in case.ids)
    lettered = dead_bodies[case.body] > 0
    return stored != lettered if case.ids else True


def test_corpus_through_the_real_stack(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=20, max_receive_count=5)
    bodies, expected_dead, good = _bodies()
    send_bodies(sqs_client, queue.url, bodies)
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20)
    letters: list[dict[str, Any]] = []

    def settled() -> bool:
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=0))
        dead_bodies = Counter(m["Body"] for m in letters)
        decided = all(
            _stored_or_dead(c, mongo_db, dead_bodies) for c in SENDABLE if c.expect is Expect.STORE
        )
        return (
            decided
            and mongo_db[GOOD_COLLECTION].count_documents({}) >= good
            and len(letters) >= sum(expected_dead.values())
        )

    with running([consumer]):
        assert wait_until(settled, 120, interval=1.0)
        wait_until(lambda: False, 2)  # anything more would be a duplicate dead letter
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=1))
        assert consumer.alive()
    record_summary(bad_inputs=len(SENDABLE), crashes=crashes([consumer]))

    assert mongo_db[GOOD_COLLECTION].count_documents({}) == good
    dead_bodies = Counter(m["Body"] for m in letters)
    for body, count in expected_dead.items():
        assert dead_bodies[body] == count, f"dead letters for {body[:80]!r}"
    reasonless = [
        m["Body"][:80] for m in letters if REASON_ATTRIBUTE not in m.get("MessageAttributes", {})
    ]
    assert not reasonless, f"dead letters without a reason (SQS's own redrive?): {reasonless}"
    reasons: dict[str, list[str]] = {}
    for m in letters:
        reason = m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
        assert not PYTHON_TEXT.search(reason), f"a reason in Python's words: {reason!r}"
        reasons.setdefault(m["Body"], []).append(reason)
    for case in SENDABLE:
        if case.expect is Expect.DEAD:
            assert any(case.reason in r for r in reasons[case.body]), case.name
        elif case.expect is Expect.WRITTEN:
            for i in case.ids:
                coll = "événements" if case.name.startswith("unicode") else "corpus_odd"
                assert mongo_db[coll].count_documents({"_id": i}) == 1, case.name
        else:
            assert _stored_or_dead(case, mongo_db, dead_bodies), case.name
    unexpected = set(dead_bodies) - set(expected_dead) - {c.body for c in SENDABLE}
    assert not unexpected, "only corpus cases may be dead-lettered"
    assert crashes([consumer]) == 0, consumer.log_text()[-3000:]
