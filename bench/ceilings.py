"""What each server allows on its own, with our consumer's concurrency.

sqs:   receive 10 + DeleteMessageBatch in a loop, no MongoDB, on as many threads as
       `ingest run` talks to SQS with (pollers + ackers). In messages/s for one record
       per message, and in records/s for packed messages.
mongo: unordered insert_many of the same documents, no SQS, on `writers` threads."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from bench import infra
from bench.records import COLLECTION, record_lines
from ingest.settings import Settings

DEFAULTS = Settings()
SQS_THREADS = DEFAULTS.pollers + DEFAULTS.ackers
MONGO_THREADS = DEFAULTS.writers
MONGO_CHUNK = 1000  # documents per insert_many, about what a coalesced packed batch holds


def _drain_raw(client: Any, url: str, expected_messages: int, threads: int) -> float:
    """Receive and batch-delete until `expected_messages` are gone; seconds taken."""
    deleted = [0]

    def loop() -> None:
        while deleted[0] < expected_messages:
            got = client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            ).get("Messages", [])  # fmt: skip
            if got:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ]
                client.delete_message_batch(QueueUrl=url, Entries=entries)
                deleted[0] += len(got)  # a racy += only ever undercounts: the loop runs longer

    start = time.monotonic()
    infra.run_all([loop] * threads)
    return time.monotonic() - start


def sqs(bodies: Sequence[infra.Body], threads: int = SQS_THREADS) -> dict[str, Any]:
    client = infra.sqs_client()
    with infra.temp_queue(client, "ceiling-sqs") as url:
        infra.send_bodies(client, url, bodies)
        seconds = _drain_raw(client, url, len(bodies), threads)
    records = sum(b.records for b in bodies)
    return {
        "messages": len(bodies),
        "records": records,
        "threads": threads,
        "seconds": round(seconds, 3),
        "messages_per_s": infra.rate(len(bodies), seconds),
        "rps": infra.rate(records, seconds),
    }


def sqs_single(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return sqs(infra.single_bodies(record_lines(list(documents))))


def sqs_packed(documents: Sequence[dict[str, Any]], messages: int) -> dict[str, Any]:
    """Packed messages of these documents as our Producer sends them by default,
    repeated up to `messages` (bodies may repeat: nothing here decodes them)."""
    bodies = infra.producer_bodies(documents)
    repeated = [bodies[i % len(bodies)] for i in range(max(messages, len(bodies)))]
    return sqs(repeated)


def _insert_all(documents: Sequence[Any], threads: int) -> float:
    client = infra.mongo_client(pool=threads + 2)
    with infra.temp_database(client, "ceiling_mongo") as db:
        collection = client[db][COLLECTION]
        chunks = [documents[i : i + MONGO_CHUNK] for i in range(0, len(documents), MONGO_CHUNK)]
        start = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda chunk: collection.insert_many(chunk, ordered=False), chunks))
        seconds = time.monotonic() - start
        infra.check_stored(client, db, len(documents))
    client.close()
    return seconds


def mongo(
    documents: Sequence[dict[str, Any]],
    threads: int = MONGO_THREADS,
    repeats: int = 3,
    *,
    raw: bool = False,
) -> dict[str, Any]:
    """Best of `repeats` runs, each into a fresh database: a ceiling is the best the server
    does, and the shared servers' background load only ever lowers a run. With `raw`,
    the documents go in as RawBSONDocument (encoded beforehand, as format 2 carries
    them), so the driver only copies bytes."""
    given: Sequence[Any] = documents
    if raw:
        given = [RawBSONDocument(bson.encode(d)) for d in documents]
    runs = [_insert_all(given, threads) for _ in range(repeats)]
    return {
        "records": len(documents),
        "threads": threads,
        "chunk": MONGO_CHUNK,
        "raw_bson": raw,
        "seconds": round(min(runs), 3),
        "runs_rps": [infra.rate(len(documents), s) for s in runs],
        "rps": infra.rate(len(documents), min(runs)),
    }
