"""The bad-input corpus end to end: ElasticMQ -> the consumer process -> FerretDB.
Every refused case lands in the dead-letter queue once per time it was sent, with
its reason; every other case is stored once (what the store refuses depends on the
server: the corpus says which, per case); good records beside them (same receive
batch, same packed message) are written; the consumer never crashes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.queues.base import REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE
from producer import wire
from tests.support.corpus import (
    CASES,
    GOOD_COLLECTION,
    ODD_COLLECTION,
    PYTHON_TEXT,
    Case,
    attrs,
    is_ferretdb,
    letter_reason,
)
from tests.support.harness import (
    Body,
    Consumer,
    crashes,
    record_summary,
    running,
    send_each,
    wait_until,
)
from tests.support.queues import drain_queue

SENDABLE = [case for case in CASES if case.sendable]


def _good(tag: str, count: int) -> list[str]:
    return [wire.encode_record(GOOD_COLLECTION, {"_id": f"{tag}-{n}"}) for n in range(count)]


@dataclass(frozen=True)
class Sent:
    """One message sent: the case it carries (None: good records only), and whether
    the case's body went alone or packed between good lines."""

    body: Body
    case: Case | None = None
    packed: bool = False


def _messages() -> tuple[list[Sent], int]:
    """Each case alone, each line case packed between good lines (plain and zstd),
    and good single-record messages in between; and the number of good records."""
    sent: list[Sent] = []
    good = 0
    for n, case in enumerate(SENDABLE):
        sent.append(Sent((case.body, case.attributes), case))
        sent.append(Sent((_good(f"solo{n}", 1)[0], {})))
        good += 1
        if case.line:
            encoding = wire.ZSTD if n % 2 else wire.IDENTITY
            text = wire.join_lines([*_good(f"pre{n}", 2), case.body, *_good(f"post{n}", 2)])
            sent.append(Sent((wire.compress_body(text, encoding), attrs(encoding)), case, True))
            good += 4
    return sent, good


def test_corpus_through_the_real_stack(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=20, max_receive_count=5)
    ferretdb = is_ferretdb(mongo_db)
    sent, good = _messages()
    message_ids = send_each(sqs_client, queue.url, [s.body for s in sent])
    # Each message carrying a refused case causes exactly one letter, with the case's reason.
    expected = {
        message_id: s
        for message_id, s in zip(message_ids, sent, strict=True)
        if s.case is not None and letter_reason(s.case, ferretdb)
    }
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20)
    letters: list[dict[str, Any]] = []

    def settled() -> bool:
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=0))
        return mongo_db[GOOD_COLLECTION].count_documents({}) >= good and len(letters) >= len(
            expected
        )

    with running([consumer]):
        assert wait_until(settled, 120, interval=1.0)
        wait_until(lambda: False, 2)  # anything more would be a duplicate dead letter
        letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=1))
        assert consumer.alive()
    record_summary(bad_inputs=len(SENDABLE), crashes=crashes([consumer]))

    assert mongo_db[GOOD_COLLECTION].count_documents({}) == good
    reasonless = [
        m["Body"][:80] for m in letters if REASON_ATTRIBUTE not in m.get("MessageAttributes", {})
    ]
    assert not reasonless, f"dead letters without a reason (SQS's own redrive?): {reasonless}"
    by_source: dict[str, list[dict[str, Any]]] = {}
    for m in letters:
        reason = m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
        assert not PYTHON_TEXT.search(reason), f"a reason in Python's words: {reason!r}"
        source = m["MessageAttributes"][SOURCE_MESSAGE_ATTRIBUTE]["StringValue"]
        by_source.setdefault(source, []).append(m)
    for message_id, s in expected.items():
        assert s.case is not None
        mine = by_source.pop(message_id, [])
        assert len(mine) == 1, (s.case.name, s.packed, len(mine))
        (letter,) = mine
        reason = letter["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
        assert letter_reason(s.case, ferretdb) in reason, (s.case.name, reason)
        assert letter["Body"] == s.case.body, s.case.name  # as it came, or its own line
    assert not by_source, "letters from messages that carry nothing refused"
    for case in SENDABLE:  # stored once (sent twice when packed too), or not where refused
        coll = "événements" if case.name.startswith("unicode") else ODD_COLLECTION
        count = 0 if letter_reason(case, ferretdb) else 1
        for i in case.ids:
            assert mongo_db[coll].count_documents({"_id": i}) == count, case.name
    stored = [c for c in SENDABLE if not letter_reason(c, ferretdb) and c.name[:7] != "unicode"]
    assert mongo_db[ODD_COLLECTION].count_documents({}) == sum(len(c.ids) for c in stored)
    assert crashes([consumer]) == 0, consumer.log_text()[-3000:]
