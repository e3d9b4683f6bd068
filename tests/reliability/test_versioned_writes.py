"""Version-guarded writes on the real stack: 10 versions of each of 1,000 _ids, sent
shuffled and every message twice, drained by two `ingest run --write-mode replace
--version-field v` processes with four writers each. Every document ends at its
highest version; late versions are counted as stale, nothing is dead-lettered. On
the way, `ingest status` sees both replicas (no ceiling) and a drain estimate."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import (
    INGEST,
    SEED,
    Consumer,
    crashes,
    pack,
    running,
    scale,
    send_bodies,
    wait_until,
)
from tests.support.queues import drain_queue

IDS = scale(1000, 3000)
VERSIONS = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _counters(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith("_total") and not sample.labels
    }


def _status(queue_url: str, mongo_uri: str, database: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(INGEST), "status", "--queue-url", queue_url, "--mongo-uri", mongo_uri,
         "--database", database, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_every_document_ends_at_its_highest_version(
    make_queue: Any, mongo_db: Any, mongo_uri: str, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=10)
    shuffle = random.Random(SEED)
    ids = [ObjectId() for _ in range(IDS)]
    records = [
        ("events", {"_id": oid, "v": v, "n": f"version {v}", "pad": "x" * 40})
        for oid in ids
        for v in range(1, VERSIONS + 1)
    ]
    shuffle.shuffle(records)
    bodies = pack(records, 20)
    again = list(bodies)
    shuffle.shuffle(again)  # every message a second time, in another order
    ports = [_free_port(), _free_port()]
    consumers = [
        Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / f"consumer-{n}.log",
                 extra_args=["--write-mode", "replace", "--version-field", "v", "--writers", "4",
                             "--pollers", "2", "--max-pollers", "0", "--metrics-port", str(port)])
        for n, port in enumerate(ports)
    ]  # fmt: skip
    with running(consumers):
        report = _status(queue.url, mongo_uri, mongo_db.name)
        assert len(report["replicas"]) == 2, report
        assert all(r["pool_ceiling"] is None for r in report["replicas"])
        assert report["drain"]["ceiling"] is None and "backlog_messages" in report["drain"]

        send_bodies(sqs_client, queue.url, bodies + again)
        top = {"v": VERSIONS, "n": f"version {VERSIONS}"}
        finished = wait_until(lambda: mongo_db.events.count_documents(top) == IDS, 300, 1.0)
        assert finished, f"{mongo_db.events.count_documents(top)} of {IDS} at version {VERSIONS}"
        drained = wait_until(lambda: _depth(sqs_client, queue.url) == 0, 60, 0.5)
        assert drained, "messages still in the queue after every document was at its top"
        counts = [_counters(port) for port in ports]
    assert mongo_db.events.count_documents({}) == IDS
    assert not drain_queue(sqs_client, queue.dead_letter_url)
    assert crashes(consumers) == 0
    total = {name: sum(c.get(name, 0.0) for c in counts) for name in counts[0]}
    settled = sum(
        total[f"ingest_records_{kind}_total"] for kind in ("written", "stale", "duplicate")
    )
    assert total["ingest_records_stale_total"] > 0
    assert total["ingest_records_written_total"] >= IDS
    assert settled == total["ingest_records_received_total"] - total["ingest_records_retried_total"]
    assert all(c["ingest_records_received_total"] > 0 for c in counts), "one consumer did nothing"


def _depth(sqs_client: Any, url: str) -> int:
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())
