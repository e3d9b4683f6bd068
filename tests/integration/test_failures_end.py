"""Every failure ends, tried from outside on the real stack: a record that clashes on a
unique secondary index is dead-lettered with a reason naming the key, never dropped as
a duplicate, in every write mode; names MongoDB refuses are refused at send(), and the
consumer dead-letters them alone when they arrive in a message written by hand."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import ObjectId, json_util

from ingest.queues.base import REASON_ATTRIBUTE
from producer import Producer, wire
from tests.support.harness import INGEST, Consumer, crashes, running, send_bodies, wait_until
from tests.support.queues import drain_queue

MODES = ["insert-once", "replace", "merge"]


def _reason(message: dict[str, Any]) -> str:
    return str(message["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"])


def _letters(sqs_client: Any, url: str, into: list[dict[str, Any]]) -> int:
    into.extend(drain_queue(sqs_client, url, wait=0))
    return len(into)


def _peek(sqs_client: Any, url: str, into: dict[str, dict[str, Any]]) -> int:
    """What the dead-letter queue holds, left in it (for a redrive)."""
    got = sqs_client.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0,
        MessageAttributeNames=["All"],
    ).get("Messages", [])  # fmt: skip
    into.update((m["MessageId"], m) for m in got)
    return len(into)


def _send(url: str, journal: Path, records: list[dict[str, Any]]) -> None:
    with Producer(url, journal_dir=journal) as producer:
        for record in records:
            producer.send("users", record)


@pytest.mark.parametrize("mode", MODES)
def test_a_clash_on_a_unique_index_is_dead_lettered_naming_the_key_and_redriven_once_fixed(
    mode: str, sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """Once every duplicate-key error was taken for a redelivery: 299 of 300 written,
    no dead letter, no log line."""
    queue = make_queue(visibility_timeout=20)
    users = mongo_db.users
    users.create_index("email", unique=True)
    users.insert_one({"_id": "earlier", "email": "taken@example.com"})
    records = [{"_id": ObjectId(), "email": f"u{n}@example.com", "n": n} for n in range(300)]
    clashing = records[137]
    clashing["email"] = "taken@example.com"
    _send(queue.url, tmp_path / "journal", records)
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20,
                        extra_args=["--write-mode", mode])  # fmt: skip
    letters: dict[str, dict[str, Any]] = {}
    with running([consumer]):
        assert wait_until(lambda: _peek(sqs_client, queue.dead_letter_url, letters) >= 1, 60)
        assert wait_until(lambda: users.count_documents({}) >= 300, 30)
    assert users.count_documents({"_id": {"$in": [r["_id"] for r in records]}}) == 299
    assert users.find_one({"_id": clashing["_id"]}) is None
    (letter,) = letters.values()
    reason = _reason(letter)
    assert reason.startswith("duplicate key: another document in users already has")
    assert '"email": "taken@example.com"' in reason and "unique index" in reason
    assert "email" in reason.split("unique index", 1)[1], reason
    assert crashes([consumer]) == 0

    users.drop_index("email_1")
    redrive = subprocess.run(
        [str(INGEST), "dlq", "redrive", "--queue-url", queue.url],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert redrive.returncode == 0, redrive.stderr
    with running([consumer]):
        assert wait_until(lambda: users.find_one({"_id": clashing["_id"]}) is not None, 60)
    assert users.count_documents({"_id": {"$in": [r["_id"] for r in records]}}) == 300
    assert drain_queue(sqs_client, queue.dead_letter_url, wait=0) == []


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("a..b", "must not contain '..'"),
        ("system.users", "is reserved"),
        ("pay$ments", "must not contain '$'"),
        (".hidden", "must not start or end with '.'"),
        ("", "is empty"),
        ("x" * 121, "longer than 120 bytes"),
    ],
)
def test_names_mongodb_refuses_are_refused_at_send(name: str, rule: str, tmp_path: Path) -> None:
    producer = Producer("https://sqs.us-east-1.amazonaws.com/1/q", journal_dir=tmp_path)
    try:
        with pytest.raises(wire.WireError, match=re.escape(rule)):
            producer.send(name, {"n": 1})
        assert producer.stats().accepted == 0
    finally:
        producer.close(timeout=0)


BAD_NAMES = ["a..b", "system.x", "a$b", ".a", "b."]


def _format2_body(items: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    raw = wire.pack_bson([(c, bson.encode(d), None) for c, d in items])
    return wire.bson_body(raw, wire.IDENTITY), wire.message_attributes(
        wire.IDENTITY, len(items), wire.BSON_RECORDS
    )


def test_names_mongodb_refuses_written_into_messages_by_hand_are_dead_lettered_alone(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """`a..b` once reached pymongo, which raised in the write stage: the message and the
    nine received with it looped forever."""
    queue = make_queue(visibility_timeout=20)
    good = [{"_id": ObjectId(), "n": n} for n in range(40)]
    # Format 1: one line per bad name among good lines of two other collections.
    lines = [wire.encode_record("left" if n % 2 else "right", d) for n, d in enumerate(good[:20])]
    for position, name in enumerate(BAD_NAMES):
        line = f'{{"c":{json_util.dumps(name)},"d":{{"_id":"f1-{position}"}}}}'
        lines.insert(3 * position + 1, line)
    # Format 2: the bad names in the collection table, beside good records.
    items: list[tuple[str, dict[str, Any]]] = [("left", d) for d in good[20:]]
    for position, name in enumerate(BAD_NAMES):
        items.insert(4 * position, (name, {"_id": f"f2-{position}"}))
    send_bodies(sqs_client, queue.url, [(wire.join_lines(lines), {}), _format2_body(items)])
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20)
    letters: list[dict[str, Any]] = []
    expected = 2 * len(BAD_NAMES)

    def written() -> int:
        return int(mongo_db.left.count_documents({}) + mongo_db.right.count_documents({}))

    with running([consumer]):
        assert wait_until(
            lambda: _letters(sqs_client, queue.dead_letter_url, letters) >= expected, 60
        )
        assert wait_until(lambda: written() >= len(good), 30)
    assert written() == len(good)
    assert len(letters) == expected  # each bad record alone, nothing else
    reasons = sorted(_reason(m) for m in letters)
    for name in BAD_NAMES:
        shown = repr(name)
        assert sum(shown in reason for reason in reasons) == 2, (name, reasons)
    assert crashes([consumer]) == 0


def test_merge_dead_letters_a_dotted_field_name_alone_instead_of_nesting_it(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """$set takes a dot for a path: once, {"a.b": 1} was stored as {"a": {"b": 1}} in
    merge mode, silently, while insert and replace refused it."""
    queue = make_queue(visibility_timeout=20)
    records = [{"_id": ObjectId(), "n": n} for n in range(50)]
    dotted = records[17]
    dotted["profile.email"] = "a@example.com"
    _send(queue.url, tmp_path / "journal", records)
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20,
                        extra_args=["--write-mode", "merge"])  # fmt: skip
    letters: list[dict[str, Any]] = []
    with running([consumer]):
        assert wait_until(lambda: _letters(sqs_client, queue.dead_letter_url, letters) >= 1, 60)
        assert wait_until(lambda: mongo_db.users.count_documents({}) >= 49, 30)
    assert mongo_db.users.count_documents({}) == 49
    assert mongo_db.users.find_one({"_id": dotted["_id"]}) is None
    (letter,) = letters
    assert _reason(letter).startswith(
        "field 'profile.email' has a '.': the merge write mode sets fields with $set"
    )
    assert crashes([consumer]) == 0
