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

from ingest.settings import Settings
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
from tests.support.metrics import sample, scrape
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
    """While MongoDB is down the pollers stop receiving: once the breaker is open the
    consumer's receive count grows by no more than the receives already under way, while
    the feeder's messages wait in SQS. (maxReceiveCount stays at 5: a consumer that kept
    receiving would also move good messages to the dead-letter queue.)"""
    queue = make_queue(visibility_timeout=10, max_receive_count=5)
    ledger = Ledger("events")
    ferret = PrivateFerretDB(tmp_path / "ferretdb", tmp_path / "ferretdb.log")
    outages = scale(1, 2)
    with ferret:
        # Read and clean up through the private FerretDB: another FerretDB process
        # caches its catalogue and would not see this database.
        db = MongoClient(ferret.uri, serverSelectionTimeoutMS=20000)[mongo_db.name]
        port = free_port()
        consumer = Consumer(queue.url, ferret.uri, db.name, tmp_path / "c.log", 10,
                            extra_args=["--metrics-port", str(port)])  # fmt: skip
        try:
            with running([consumer]), Feeder(sqs_client, queue.url, ledger):
                for _ in range(outages):
                    # The fault lands after a random (seeded) amount of writing.
                    _written_more(port, rng.randint(200, 1000))
                    ferret.stop()
                    try:
                        opened = _breaker_opened(port, timeout=60)
                        # The fault's duration, from the breaker opening, watched throughout.
                        _hold_receiving_nothing(port, opened, scale(6, 30) + rng.uniform(0, 2))
                        assert _visible(sqs_client, queue.url) > 0, "no message waited"
                    finally:
                        ferret.start()
                    assert wait_until(lambda: sample(port, "ingest_sink_breaker_open") == 0, 60)
                _written_more(port, 200)  # resumed: the feeder's later waves are written too
            # the consumer stopped with the feeder: run it again to drain what came late
            with running([consumer]):
                result = wait_for_all(db[ledger.collection], ledger, timeout=120)
        finally:
            db.client.drop_database(db.name)
            db.client.close()
    assert consumer.starts == 2
    _settle(result, [consumer], sqs_client, queue, outages)


#: The most messages the pollers can hold under way at one moment, from the consumer's own
#: settings (these tests keep its defaults): as many pollers as scaling allows, one
#: receive of at most max_messages each.
_SETTINGS = Settings()
UNDER_WAY = max(_SETTINGS.pollers, _SETTINGS.max_pollers) * _SETTINGS.max_messages
_RECEIVED = "ingest_messages_received_total"
_OPEN = "ingest_sink_breaker_open"


def _written_more(port: int, records: int, timeout: float = 60) -> None:
    """Until the consumer has written `records` more records than now."""
    start = sample(port, "ingest_records_written_total") or 0.0
    assert wait_until(
        lambda: (sample(port, "ingest_records_written_total") or 0.0) >= start + records,
        timeout, 0.1,
    ), f"the consumer did not write {records} more records within {timeout:.0f}s"  # fmt: skip


def _breaker_opened(port: int, timeout: float) -> dict[str, float]:
    """Waits until the consumer says its breaker is open; its metrics of that moment."""
    seen: dict[str, float] = {}

    def is_open() -> bool:
        nonlocal seen
        seen = scrape(port)
        return seen.get(_OPEN) == 1

    assert wait_until(is_open, timeout, 0.1), f"the breaker did not open within {timeout:.0f}s"
    return seen


def _hold_receiving_nothing(port: int, opened: dict[str, float], seconds: float) -> None:
    """For `seconds` (the outage's length) the breaker stays open and the receive count
    grows by no more than the receives under way when it opened (each poller asks the
    breaker before every receive)."""
    problem = ""

    def broken() -> bool:
        nonlocal problem
        now = scrape(port)
        received = now.get(_RECEIVED, opened[_RECEIVED]) - opened[_RECEIVED]
        if now and now.get(_OPEN) != 1:
            problem = "the breaker closed while MongoDB was down"
        elif received > UNDER_WAY:
            problem = (
                f"{received:.0f} messages received while MongoDB was down and the breaker "
                f"open (at most {UNDER_WAY}: one receive under way per poller when it opened)"
            )
        return bool(problem)

    assert not wait_until(broken, seconds, 0.25), problem


def _visible(sqs_client: Any, url: str) -> int:
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


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
                time.sleep(rng.uniform(1.5, 4))  # when the fault lands (seeded), mid-traffic
                proxy.refuse()
                time.sleep(scale(6, 30) + rng.uniform(0, 2))  # the fault's duration
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
            time.sleep(rng.uniform(1.5, 3))  # when the fault lands (seeded), mid-traffic
            frozen.signal(signal.SIGSTOP)
            time.sleep(visibility + rng.uniform(2, scale(4, 10)))  # the fault's duration
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
                # Each sleep below is a fault's duration (or when it lands, seeded).
                time.sleep(rng.uniform(1, 2))
                to_mongo.delay(rng.choice([50, 200, 500]))
                to_sqs.delay(rng.choice([50, 200, 500]))
                time.sleep(scale(3, 8))  # slow network
                to_mongo.cut()
                to_sqs.cut()
                time.sleep(rng.uniform(0.5, 2))  # cut
                to_mongo.refuse()
                time.sleep(scale(2, 6))  # MongoDB refused
                to_mongo.passthrough()
                to_sqs.refuse()
                time.sleep(scale(2, 6))  # SQS refused
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
                opened = _breaker_opened(port, pause)
                # Its probes read a stored document: none answers before the resume, and
                # the pollers receive nothing for the rest of the pause (its duration).
                _hold_receiving_nothing(port, opened, pause - (time.monotonic() - paused_at))
            finally:
                postgres.resume()
        with running([consumer]):
            result = wait_for_all(db[ledger.collection], ledger, timeout=180)
        db.client.close()
    _settle(result, [consumer], sqs_client, queue, 1)
