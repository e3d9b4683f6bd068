"""The README's two central promises, tried from outside as a user or a hostile input
would, on the real local stack:

* a bad record never blocks the good records beside it (even one that the database
  refuses for the whole bulk, while it still answers);
* send() never loses a record (even in a script that exits without close()).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families

from ingest.queues.base import REASON_ATTRIBUTE
from producer import wire
from tests.support.harness import Consumer, crashes, running, send_bodies, wait_until
from tests.support.queues import drain_queue


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _counter(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def _is_ferretdb(db: Any) -> bool:
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


def _collect(sqs_client: Any, url: str, into: list[dict[str, Any]]) -> int:
    """Moves what the dead-letter queue holds now into `into`; returns how many it has."""
    into.extend(drain_queue(sqs_client, url, wait=0))
    return len(into)


def _reason(message: dict[str, Any]) -> str:
    return str(message["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"])


def test_a_record_refused_for_the_whole_bulk_does_not_take_its_300_neighbours(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """FerretDB answers an insert holding a NUL in a string with one error for the whole
    command (PostgreSQL 22P05), though MongoDB stores it. Once that was taken for an
    outage: the batch went back, came again, and SQS's redrive moved the whole message,
    all 301 records, to the dead-letter queue without a reason."""
    queue = make_queue(visibility_timeout=20, max_receive_count=5)
    good = [{"_id": ObjectId(), "n": n, "pad": "x" * 60} for n in range(300)]
    poison = {"_id": "nul", "s": "before\x00after"}
    lines = [wire.encode_record("audit", d) for d in good]
    lines.insert(123, wire.encode_record("audit", poison))
    send_bodies(sqs_client, queue.url, [(wire.join_lines(lines), {})])
    port = _free_port()
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20,
                        extra_args=["--metrics-port", str(port)])  # fmt: skip
    ferretdb = _is_ferretdb(mongo_db)
    letters: list[dict[str, Any]] = []
    with running([consumer]):
        assert wait_until(lambda: mongo_db.audit.count_documents({}) >= 300 + (not ferretdb), 60)
        if ferretdb:
            assert wait_until(lambda: _collect(sqs_client, queue.dead_letter_url, letters) >= 1, 30)
        assert wait_until(lambda: _counter(port, "ingest_messages_deleted_total") == 1, 30)
        received = _counter(port, "ingest_messages_received_total")
    assert received <= 2, f"the source message was received {received} times"
    assert mongo_db.audit.count_documents({"_id": {"$in": [d["_id"] for d in good]}}) == 300
    if ferretdb:
        (letter,) = letters
        assert json.loads(letter["Body"])["d"]["_id"] == "nul"
        assert _reason(letter).startswith("refused by the database (error 1 InternalError)")
        assert "22P05" in _reason(letter)
        assert mongo_db.audit.count_documents({"_id": "nul"}) == 0
    else:  # MongoDB stores a NUL inside a string
        assert mongo_db.audit.count_documents({"_id": "nul"}) == 1
    assert crashes([consumer]) == 0


def test_the_same_line_with_an_oid_of_null_sent_twice_is_dead_lettered_twice(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """{"$oid": null} once decoded to a fresh random ObjectId each time: every
    redelivery became another document."""
    queue = make_queue(visibility_timeout=20)
    line = '{"c":"oids","d":{"_id":{"$oid":null},"v":1}}'
    send_bodies(sqs_client, queue.url, [(line, {}), (line, {})])
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 20)
    letters: list[dict[str, Any]] = []
    with running([consumer]):
        assert wait_until(lambda: _collect(sqs_client, queue.dead_letter_url, letters) >= 2, 30)
    assert [m["Body"] for m in letters] == [line, line]
    assert all(_reason(m) == "invalid ObjectId value null: expected 24 hex digits" for m in letters)
    assert mongo_db.oids.count_documents({}) == 0


_SCRIPT = textwrap.dedent(
    """
    import sys
    from producer import Producer

    producer = Producer(sys.argv[1], journal_dir=sys.argv[2])
    for n in range(100):
        producer.send("cron", {"run": int(sys.argv[3]), "n": n})
    # no close(): the script just ends, as cron jobs and management commands do
    """
)


def test_a_script_that_exits_without_close_delivers_every_record(
    make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """At exit the sender built its boto3 client for the first time, whose import
    registers an exit hook, which Python refuses while shutting down: every record
    went to the journal and stayed there."""
    queue = make_queue()
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    journal = tmp_path / "journal"
    for run in range(3):
        done = subprocess.run(
            [sys.executable, str(script), queue.url, str(journal), str(run)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "stay in the journal" not in done.stderr
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log")
    with running([consumer]):
        assert wait_until(lambda: mongo_db.cron.count_documents({}) >= 300, 60)
    assert mongo_db.cron.count_documents({}) == 300
    assert sorted(mongo_db.cron.distinct("run")) == [0, 1, 2]
    assert not list(journal.glob("*.seg"))


def test_records_journaled_at_exit_are_counted_then_replayed_by_the_next_run(
    make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue()
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    journal = tmp_path / "journal"
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens: SQS unreachable
    down = subprocess.run(
        [sys.executable, str(script), queue.url, str(journal), "0"],
        capture_output=True, text=True, timeout=60,
        env={**_env(), "AWS_ENDPOINT_URL_SQS": closed},
    )  # fmt: skip
    assert down.returncode == 0 and "Traceback" not in down.stderr, down.stderr
    assert f"100 records stay in the journal at {journal}" in down.stderr
    up = subprocess.run(
        [sys.executable, str(script), queue.url, str(journal), "1"],
        capture_output=True, text=True, timeout=60, env=_env(),
    )  # fmt: skip
    assert up.returncode == 0 and "Traceback" not in up.stderr, up.stderr
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log")
    with running([consumer]):
        assert wait_until(lambda: mongo_db.cron.count_documents({}) >= 200, 60)
    assert mongo_db.cron.count_documents({}) == 200
    assert not list(journal.glob("*.seg"))


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
