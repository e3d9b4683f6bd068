"""Shared plumbing for the scenarios: clients, throwaway queues and databases, fills, timing.

Every queue and database made here is uniquely named and removed afterwards,
since other people use the same local servers."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from pymongo import MongoClient

from bench.records import COLLECTION
from producer import Producer, wire
from producer.wire import bounded_groups

FILL_THREADS = 8
SQS_BATCH = 10


def sqs_client(pool: int = 50) -> Any:
    config = Config(max_pool_connections=pool, retries={"mode": "standard", "max_attempts": 5})
    return boto3.session.Session().client("sqs", config=config)


def mongo_uri() -> str:
    return os.environ.get("INGEST_MONGO_URI", "mongodb://127.0.0.1:27017/")


def mongo_client(pool: int = 20) -> MongoClient[dict[str, Any]]:
    return MongoClient(mongo_uri(), serverSelectionTimeoutMS=5000, maxPoolSize=pool)


def unique(prefix: str) -> str:
    return f"bench_{prefix}_{uuid.uuid4().hex[:8]}"


@contextmanager
def temp_queue(client: Any, prefix: str, visibility_timeout: int = 60) -> Iterator[str]:
    name = unique(prefix).replace("_", "-")
    url: str = client.create_queue(
        QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)}
    )["QueueUrl"]
    try:
        yield url
    finally:
        client.delete_queue(QueueUrl=url)


@contextmanager
def temp_database(mongo: MongoClient[dict[str, Any]], prefix: str) -> Iterator[str]:
    name = unique(prefix)
    try:
        yield name
    finally:
        mongo.drop_database(name)


# --------------------------------------------------------------------- fills


@dataclass(frozen=True)
class Body:
    text: str
    attributes: dict[str, dict[str, str]]
    records: int

    @property
    def size(self) -> int:
        return len(self.text.encode()) + wire.attributes_size(self.attributes)


def single_bodies(lines: Sequence[str]) -> list[Body]:
    """One record per message, in our wire format (what any plain producer sends)."""
    attributes = wire.message_attributes(wire.IDENTITY, 1)
    return [Body(line, attributes, 1) for line in lines]


class AcceptingSQS:
    """Stands in for SQS: takes every batch at once (what is measured is the producer)."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


class _Capture(AcceptingSQS):
    """AcceptingSQS that also keeps the messages a Producer sends."""

    def __init__(self) -> None:
        self.bodies: list[Body] = []
        self._lock = threading.Lock()

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        with self._lock:
            for entry in Entries:
                attributes = entry.get("MessageAttributes", {})
                records = len(wire.decode_message(entry["MessageBody"], attributes))
                self.bodies.append(Body(entry["MessageBody"], attributes, records))
        return super().send_message_batch(QueueUrl, Entries)


def producer_bodies(documents: Sequence[dict[str, Any]], **options: Any) -> list[Body]:
    """The messages our Producer sends for these documents (its defaults unless
    `options` says otherwise), without sending them."""
    capture = _Capture()
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as journal:
        producer = Producer("http://capture.invalid/000000000000/bench", sqs_client=capture,
                            journal_dir=journal, **options)  # fmt: skip
        for document in documents:
            producer.send(COLLECTION, dict(document))
        producer.close(timeout=300)
    if sum(b.records for b in capture.bodies) != len(documents):
        raise RuntimeError("the producer did not hand over every record")
    return capture.bodies


def send_bodies(
    client: Any, url: str, bodies: Sequence[Body], max_batch_bytes: int = 262144
) -> int:
    """SendMessageBatch from several threads; returns the number of calls made."""
    batches = list(_batches(bodies, max_batch_bytes))

    def send(batch: list[Body]) -> None:
        entries = [
            {"Id": str(i), "MessageBody": b.text, "MessageAttributes": b.attributes}
            for i, b in enumerate(batch)
        ]
        failed = client.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(f"fill failed for {len(failed)} messages: {failed[0]}")

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(send, batches))
    return len(batches)


def _batches(bodies: Sequence[Body], max_bytes: int) -> Iterator[list[Body]]:
    return bounded_groups(bodies, lambda body: body.size, max_bytes, SQS_BATCH)


def produce(client: Any, url: str, documents: Sequence[dict[str, Any]], **options: Any) -> Any:
    """Fill through our Producer with its defaults (packing); returns its stats."""
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as journal:
        producer = Producer(url, sqs_client=client, journal_dir=journal, **options)
        for document in documents:
            producer.send(COLLECTION, dict(document))
        producer.flush(timeout=300)
        stats = producer.stats()
        producer.close()
    return stats


def queue_count(client: Any, url: str) -> int:
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


# -------------------------------------------------------------------- timing


def stored_count(mongo: MongoClient[dict[str, Any]], database: str) -> int:
    """Documents in the benchmark collection. collStats, not count_documents: on FerretDB
    counting 20k documents takes seconds, collStats half a second."""
    stats = mongo[database].command("collStats", COLLECTION)
    return int(stats.get("count", 0))


def wait_until(
    reached: Callable[[], bool],
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    poll: float = 0.05,
) -> float:
    """Poll until `reached()`; returns the time.monotonic() it was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reached():
            return time.monotonic()
        if not alive():
            if reached():  # finished and exited between two polls
                return time.monotonic()
            raise RuntimeError("the consumer stopped before the queue was drained")
        time.sleep(poll)
    raise TimeoutError(f"not drained within {timeout:.0f}s")


def check_stored(mongo: MongoClient[dict[str, Any]], database: str, expected: int) -> None:
    found = stored_count(mongo, database)
    if found != expected:
        raise RuntimeError(f"{database}: {found} documents stored, {expected} expected")


def run_all(targets: Sequence[Callable[[], None]]) -> None:
    """Run each target on its own thread; re-raise the first error."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0
