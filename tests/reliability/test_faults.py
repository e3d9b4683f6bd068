"""Faults against the real stack: MongoDB down, SQS down, a consumer frozen past its
visibility timeout, a slow and cut network. After each, every record sent is in
MongoDB exactly once, the dead-letter queue is empty and the producer journal too.
Quick sizes by default; RELIABILITY_FULL=1 (make reliability) runs the long ones."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from pymongo import MongoClient

from producer import Producer
from tests.support.harness import (
    SEED,
    Consumer,
    Feeder,
    Ledger,
    Tally,
    crashes,
    record_summary,
    running,
    scale,
    wait_for_all,
    wait_until,
)
from tests.support.queues import QueuePair, drain_queue
from tests.support.servers import PrivateFerretDB, PrivatePostgres, free_port, port_open
from tests.support.tcpproxy import TcpProxy

rng = random.Random(SEED)


def _settle(
    result: Tally, consumers: list[Consumer], sqs_client: Any, queue: QueuePair, faults: int
) -> None:
    dead = drain_queue(sqs_client, queue.dead_letter_url)
    crashed = crashes(consumers)
    hung = sum(consumer.stop_timeouts for consumer in consumers)
    record_summary(faults=faults, crashes=crashed, stop_timeouts=hung, **result.as_dict())
    assert result.lost == 0, f"{result.lost} of {result.sent} records lost"
    assert result.duplicates == 0
    assert result.stored == result.sent
    assert dead == [], f"{len(dead)} messages dead-lettered: {dead[:2]}"
    assert crashed == 0


def _sqs_endpoint() -> tuple[str, int]:
    endpoint = os.environ["AWS_ENDPOINT_URL_SQS"]
    host, port = endpoint.rsplit("//", 1)[1].split(":")
    return host, int(port.rstrip("/"))


def test_mongodb_stopped_then_started(
    sqs_client: Any, make_queue: Any, mongo_db: Any, tmp_path: Path
) -> None:
    """maxReceiveCount stays at 5: if the consumer kept receiving while MongoDB is
    down, SQS would move good messages to the dead-letter queue."""
    queue = make_queue(visibility_timeout=10, max_receive_count=5)
    ledger = Ledger("events")
    ferret = PrivateFerretDB(tmp_path / "ferretdb", tmp_path / "ferretdb.log")
    outages = scale(1, 2)
    with ferret:
        # Read and clean up through the private FerretDB: another FerretDB process
        # caches its catalogue and would not see this database.
        db = MongoClient(ferret.uri, serverSelectionTimeoutMS=20000)[mongo_db.name]
        consumer = Consumer(queue.url, ferret.uri, db.name, tmp_path / "c.log", 10)
        try:
            with running([consumer]), Feeder(sqs_client, queue.url, ledger):
                for _ in range(outages):
                    time.sleep(rng.uniform(1.5, 4))
                    ferret.stop()
                    time.sleep(scale(8, 30) + rng.uniform(0, 2))
                    ferret.start()
                time.sleep(1)
            # the consumer stopped with the feeder: run it again to drain what came late
            with running([consumer]):
                result = wait_for_all(db[ledger.collection], ledger, timeout=120)
        finally:
            db.client.drop_database(db.name)
            db.client.close()
    assert consumer.starts == 2
    _settle(result, [consumer], sqs_client, queue, outages)


def test_sqs_stopped_while_web_app_threads_send(
    make_queue: Any, sqs_client: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """A proxy in front of ElasticMQ refuses every connection for the outage:
    the producer journals, then replays; the consumer waits, then drains."""
    queue = make_queue(visibility_timeout=10)
    ledger = Ledger("events")
    journal = tmp_path / "journal"
    with TcpProxy(*_sqs_endpoint()) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        client = boto3.client(
            "sqs", endpoint_url=endpoint,
            config=Config(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1}),
        )  # fmt: skip
        producer = Producer(queue.url, sqs_client=client, journal_dir=journal, probe_seconds=0.5)
        consumer = Consumer(
            queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", 10,
            extra_env={"AWS_ENDPOINT_URL_SQS": endpoint},
        )  # fmt: skip
        stop = threading.Event()

        def web_app() -> None:
            while not stop.wait(0.005):
                for collection, document in ledger.records(5):
                    producer.send(collection, document)

        threads = [threading.Thread(target=web_app, daemon=True) for _ in range(4)]
        with running([consumer]):
            for thread in threads:
                thread.start()
            outages = scale(1, 2)
            for _ in range(outages):
                time.sleep(rng.uniform(1.5, 4))
                proxy.refuse()
                time.sleep(scale(6, 30) + rng.uniform(0, 2))
                proxy.passthrough()
            stop.set()
            for thread in threads:
                thread.join(10)
            assert producer.flush(60)
            assert wait_until(lambda: not list(journal.glob("*.seg")), 60), "journal not replayed"
            result = wait_for_all(mongo_db[ledger.collection], ledger, timeout=120)
        producer.close()
    assert not list(journal.glob("*.seg")), "the producer journal must end empty"
    assert ledger.sent, "the web-app threads sent nothing"
    _settle(result, [consumer], sqs_client, queue, outages)


def test_consumer_frozen_past_visibility_beside_another(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """SIGSTOP one of two consumers for longer than the visibility timeout: the other
    takes its messages over; after SIGCONT the frozen one's late writes collapse."""
    visibility = 5
    queue = make_queue(visibility_timeout=visibility, max_receive_count=50)
    ledger = Ledger("events")
    consumers = [
        Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / f"c{n}.log", visibility)
        for n in range(2)
    ]
    pauses = scale(1, 3)
    with running(consumers), Feeder(sqs_client, queue.url, ledger):
        for _ in range(pauses):
            frozen = rng.choice(consumers)
            time.sleep(rng.uniform(1.5, 3))
            frozen.signal(signal.SIGSTOP)
            time.sleep(visibility + rng.uniform(2, scale(4, 10)))
            frozen.signal(signal.SIGCONT)
    with running(consumers[:1]):
        result = wait_for_all(mongo_db[ledger.collection], ledger, timeout=90)
    _settle(result, consumers, sqs_client, queue, pauses)


def test_slow_and_cut_network_to_mongodb_and_sqs(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=10, max_receive_count=50)
    ledger = Ledger("events")
    mongo_port = int(mongo_uri.rstrip("/").rsplit(":", 1)[1])
    rounds = scale(1, 3)
    with TcpProxy("127.0.0.1", mongo_port) as to_mongo, TcpProxy(*_sqs_endpoint()) as to_sqs:
        consumer = Consumer(
            queue.url, f"mongodb://127.0.0.1:{to_mongo.port}/", mongo_db.name,
            tmp_path / "c.log", 10, extra_env={"AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{to_sqs.port}"},
        )  # fmt: skip
        with running([consumer]), Feeder(sqs_client, queue.url, ledger):
            for _ in range(rounds):
                time.sleep(rng.uniform(1, 2))
                to_mongo.delay(rng.choice([50, 200, 500]))
                to_sqs.delay(rng.choice([50, 200, 500]))
                time.sleep(scale(3, 8))
                to_mongo.cut()
                to_sqs.cut()
                time.sleep(rng.uniform(0.5, 2))
                to_mongo.refuse()
                time.sleep(scale(2, 6))
                to_mongo.passthrough()
                to_sqs.refuse()
                time.sleep(scale(2, 6))
                to_sqs.passthrough()
            to_mongo.passthrough()
            to_sqs.passthrough()
        with running([consumer]):
            result = wait_for_all(mongo_db[ledger.collection], ledger, timeout=120)
    _settle(result, [consumer], sqs_client, queue, rounds * 5)


def test_postgresql_paused_under_ferretdb_is_an_outage_not_bad_records(
    sqs_client: Any, make_queue: Any, tmp_path: Path
) -> None:
    """FerretDB itself stays up (it accepts connections) while its PostgreSQL is paused
    and every query hangs. Once a timeout dead-lettered good records ("the database did
    not answer in time"); a timeout is never the record's fault: the breaker opens,
    nothing is dead-lettered, and every record is written once after the resume.
    (FerretDB 1.24's `ping` waits for PostgreSQL here too; with its pool exhausted it
    has been seen to answer. The consumer asks neither: its probe is a real query.)"""
    queue = make_queue(visibility_timeout=20, max_receive_count=5)
    ledger = Ledger("events")
    pause = scale(45, 60)  # over the consumer's 30 s socket timeout: writes time out
    with (
        PrivatePostgres() as postgres,
        PrivateFerretDB(tmp_path / "ferretdb", tmp_path / "ferretdb.log", postgres.url) as ferret,
    ):
        db = MongoClient(ferret.uri, serverSelectionTimeoutMS=20000)[f"t_{SEED}_pause"]
        port = free_port()
        consumer = Consumer(queue.url, ferret.uri, db.name, tmp_path / "c.log", 20,
                            extra_args=["--metrics-port", str(port)])  # fmt: skip
        with running([consumer]), Feeder(sqs_client, queue.url, ledger):
            assert wait_until(lambda: db[ledger.collection].count_documents({}) > 500, 60)
            postgres.pause()
            try:
                paused_at = time.monotonic()
                assert port_open(ferret.port)  # FerretDB is up: only its backend hangs
                assert wait_until(lambda: _gauge(port, "ingest_sink_breaker_open") == 1, pause)
                # Its probes read a stored document: none answers before the resume.
                while time.monotonic() - paused_at < pause:
                    assert _gauge(port, "ingest_sink_breaker_open") == 1
                    time.sleep(0.5)
            finally:
                postgres.resume()
        with running([consumer]):
            result = wait_for_all(db[ledger.collection], ledger, timeout=180)
        db.client.close()
    _settle(result, [consumer], sqs_client, queue, 1)


def _gauge(port: int, name: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return -1.0
