"""Conflicting duplicates on the real servers: `ingest run --on-conflict dead-letter`
keeps the first document, sends the conflicting record to the dead-letter queue with
both hashes, logs the collection and _id, and takes a plain redelivery as a duplicate."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
from bson import ObjectId

from ingest.queues.base import REASON_ATTRIBUTE
from producer import wire
from tests.support.queues import drain_queue

INGEST = str(Path(sys.executable).parent / "ingest")


def _send(client: Any, url: str, *lines: str) -> None:
    client.send_message(QueueUrl=url, MessageBody="\n".join(lines),
                        MessageAttributes=wire.message_attributes(wire.IDENTITY, len(lines)))  # fmt: skip


def test_a_conflicting_duplicate_is_dead_lettered_with_both_hashes(
    make_queue: Any, mongo_db: Any, sqs_client: Any
) -> None:
    queue = make_queue()
    oid = ObjectId()
    first = wire.encode_record("audit", {"_id": oid, "user": "u1", "action": "login"})
    changed = wire.encode_record("audit", {"_id": oid, "user": "u1", "action": "logout"})
    other = wire.encode_record("audit", {"_id": ObjectId(), "user": "u2", "action": "login"})
    _send(sqs_client, queue.url, first, changed)
    _send(sqs_client, queue.url, first, other)  # a redelivery of the first, and a new one
    env = dict(os.environ, INGEST_DATABASE=mongo_db.name)
    done = subprocess.run(
        [INGEST, "run", "--queue-url", queue.url, "--on-conflict", "dead-letter",
         "--exit-when-idle", "2", "--wait-seconds", "1", "--metrics-port", "0"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert mongo_db.audit.find_one({"_id": oid})["action"] == "login"
    assert mongo_db.audit.count_documents({}) == 2
    (letter,) = drain_queue(sqs_client, queue.dead_letter_url)
    assert letter["Body"] == changed
    reason = letter["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
    # The hashes from their definition (the first 16 hex digits of SHA-256 over the
    # document's BSON, _id first), over the documents as written above.
    stored = hashlib.sha256(bson.encode({"_id": oid, "user": "u1", "action": "login"}))
    mine = hashlib.sha256(bson.encode({"_id": oid, "user": "u1", "action": "logout"}))
    assert reason == (
        "conflicting duplicate: collection audit already holds another document with this _id"
        f" (stored sha256:{stored.hexdigest()[:16]}, this record sha256:{mine.hexdigest()[:16]});"
        " insert-once keeps the first"
    )
    assert f"conflicting duplicate in audit: _id {oid} is stored with other content" in done.stderr
    assert done.stderr.count("conflicting duplicate in audit") == 1
