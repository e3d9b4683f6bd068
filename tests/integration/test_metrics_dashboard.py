"""A live `ingest run` with a write ceiling: /readyz answers 200, /metrics exports every
metric the Grafana dashboard names and counts what went through (one bad record, one with
a 1971 _id, one conflicting duplicate), and `ingest status --consumer` reads its
readiness and the drain estimate.

The dashboard's PromQL itself is evaluated by a real Prometheus after a live compose run
(make container-check, scripts/container_check.py): every query must answer data there."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families

from producer import Producer, wire
from tests.support.metrics import exposed_names
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "ingest.json"
INGEST = str(Path(sys.executable).parent / "ingest")
RECORDS = 300
WRITE_CEILING = "2000"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def query_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_metric_names() -> set[str]:
    names = set()
    for panel in query_panels():
        for target in panel["targets"]:
            found = set(re.findall(r"\b(ingest_[a-z0-9_]+)\b", target["expr"]))
            assert found, f"panel {panel['title']!r} queries no ingest metric"
            names |= found
    return names


def parse_samples(text: str) -> tuple[list[Sample], set[str]]:
    """Every sample in /metrics, and the names of the histogram families."""
    samples, histograms = [], set()
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            histograms.add(family.name)
        samples += [Sample(s.name, dict(s.labels), float(s.value)) for s in family.samples]
    return samples, histograms


def _wait_ready(consumer: subprocess.Popen[str], port: int) -> bytes:
    ready: list[bytes] = []

    def answers() -> bool:
        assert consumer.poll() is None, consumer.communicate()[1][-2000:]
        try:
            status, body = _get(f"http://127.0.0.1:{port}/readyz")
        except OSError:
            return False
        if status == 200:
            ready.append(body)
        return status == 200

    assert wait_until(answers, 30, 0.2), "consumer never became ready"
    return ready[-1]


def test_every_panel_has_data_after_a_live_run_and_status_reads_readyz(
    make_queue: Any, mongo_db: Any, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue()
    # A dead letter from before this consumer started: its depth must show.
    sqs_client.send_message(QueueUrl=queue.dead_letter_url, MessageBody="an earlier dead letter")
    port = _free_port()
    env = dict(os.environ, INGEST_DATABASE=mongo_db.name)
    consumer = subprocess.Popen(
        [INGEST, "run", "--queue-url", queue.url, "--metrics-port", str(port), "--wait-seconds", "1",
         "--max-write-rate", WRITE_CEILING, "--allow-collections", "events,checks"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert json.loads(_wait_ready(consumer, port))["ready"] is True

        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        missing = dashboard_metric_names() - exposed_names(metrics.decode())
        assert not missing, f"the dashboard queries metrics the service does not export: {missing}"

        # An _id from 1971 (as a backfill's derived ids can be), alone in its batch: written,
        # and counted as clock skew instead of a 55-year end-to-end sample.
        old = ObjectId.from_datetime(datetime(1971, 6, 1, tzinfo=UTC))
        sqs_client.send_message(QueueUrl=queue.url,
                                MessageBody=wire.encode_record("checks", {"_id": old, "n": 0}))  # fmt: skip
        assert wait_until(lambda: mongo_db["checks"].count_documents({"_id": old}), 60, 0.3), (
            "the 1971 record was not written"
        )

        with Producer(queue.url, journal_dir=str(tmp_path / "journal")) as producer:
            for n in range(RECORDS):
                producer.send("events", {"n": n, "user": f"u{n % 7}"})
            producer.send("not_allowed", {"n": -1})  # the bad record: dead-lettered
            producer.send("checks", {"_id": "twice", "n": 1})
            producer.send("checks", {"_id": "twice", "n": 2})  # a conflicting duplicate
            producer.flush()

        def written() -> bool:
            assert consumer.poll() is None, consumer.communicate()[1][-2000:]
            return bool(mongo_db["events"].count_documents({}) >= RECORDS)

        assert wait_until(written, 90, 0.5), "the records were not written"
        assert mongo_db["events"].count_documents({}) == RECORDS
        assert "not_allowed" not in mongo_db.list_collection_names()

        # The depth gauges are read every 10 s: wait for one reading after the writes.
        samples: list[Any] = []
        dead: list[float] = []

        def depth_read() -> bool:
            nonlocal samples, dead
            text = _get(f"http://127.0.0.1:{port}/metrics")[1].decode()
            samples = parse_samples(text)[0]
            dead = [s.value for s in samples
                    if s.name == "ingest_dead_letter_messages" and s.labels == {"queue": queue.url}]  # fmt: skip
            return dead == [2.0]

        assert wait_until(depth_read, 40, 1.0), f"dead-letter depth {dead} (want [2.0])"
        values = {s.name: s.value for s in samples if not s.labels}
        assert values["ingest_write_ceiling_records_per_second"] == float(WRITE_CEILING)
        assert values["ingest_live_replicas"] == 1
        assert values["ingest_pollers_running"] >= 1
        assert values["ingest_write_tokens_granted_total"] >= RECORDS
        assert (
            values["ingest_records_written_total"] == RECORDS + 2
        )  # and the 1971 and "twice" ones
        labelled = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
        skewed = "ingest_end_to_end_skewed_samples_total"
        assert labelled[(skewed, (("direction", "old"),))] == 1
        assert labelled[(skewed, (("direction", "future"),))] == 0
        assert (
            values["ingest_end_to_end_seconds_sum"]
            < 120 * values["ingest_end_to_end_seconds_count"]
        )
        conflicting = ("ingest_records_conflicting_total", (("collection", "checks"),))
        assert (
            labelled[conflicting] == 1 and mongo_db["checks"].find_one({"_id": "twice"})["n"] == 1
        )
        waited = values["ingest_queue_wait_seconds_count"]
        assert waited >= values["ingest_messages_received_total"] >= 2
        assert 0 <= values["ingest_queue_wait_seconds_sum"] < 90 * waited
        reasons = {
            s.labels["reason"]: s.value
            for s in samples
            if s.name == "ingest_records_dead_lettered_total"
        }
        assert reasons == {"collection 'not_allowed' is not": 1}  # the reason's first words

        shown = subprocess.run(
            [INGEST, "status", "--queue-url", queue.url, "--json", "--consumer", f"127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        report = json.loads(shown.stdout)
        (health,) = report["consumers"].values()
        assert health["status"] == 200 and health["ready"] is True
        assert report["queues"][queue.url]["dead_letter"]["url"] == queue.dead_letter_url
        (replica,) = report["replicas"]
        assert replica["pool_ceiling"] == float(WRITE_CEILING) and replica["records_per_message"]
        assert report["drain"]["ceiling"] == float(WRITE_CEILING)
        assert report["drain"]["seconds_at_ceiling"] is not None
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=60)
    assert consumer.returncode == 0
    down = subprocess.run(
        [INGEST, "status", "--queue-url", queue.url, "--json", "--consumer", f"127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (health,) = json.loads(down.stdout)["consumers"].values()
    assert health["ready"] is False and health["status"] is None and health["error"]
