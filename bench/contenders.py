"""The consumers we compare against, each fed the same records one per message.

naive          receive 10, insert_one each, delete_message each; one thread.
naive_batched  the reference article's design: receive 10, one insert_many, one
               DeleteMessageBatch; 10 threads.
json_minimal   the shortest consumer that reads packed format-1 messages: receive 10,
               json_util.loads per line, one unordered insert_many, DeleteMessageBatch;
               10 threads. Fed the same records, packed by our Producer in format 1
               without compression.
peer           the PyPI library sqs-workers at its best settings: its batch mode
               (the handler gets many messages at once, so one insert_many), one
               worker per thread. Its queue is filled through its own API, in its
               own message format (its default pickle codec, which keeps
               ObjectId and datetime as they are)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from bson import json_util

from bench import infra
from bench.records import COLLECTION, record_lines
from producer import wire

TIMEOUT = 900.0
NAIVE_BATCHED_THREADS = 10
PEER_THREADS = 10
PEER_BATCH = 50  # messages per handler call; sqs-workers receives 10 at a time up to this
PEER_JOB = "store_operation"


class Progress:
    """A thread-safe count of stored records. Work stops at the goal, or when the time
    budget is spent (a slow contender is then measured on the records it did store)."""

    def __init__(self, goal: int, budget: float = TIMEOUT) -> None:
        self.goal = goal
        self.count = 0
        self.started = time.monotonic()
        self.deadline = self.started + budget
        self.finished_at = 0.0
        self._lock = threading.Lock()

    def add(self, records: int) -> None:
        with self._lock:
            self.count += records
            if self.count >= self.goal and not self.finished_at:
                self.finished_at = time.monotonic()

    def done(self) -> bool:
        return self.count >= self.goal or time.monotonic() > self.deadline

    def seconds(self) -> float:
        return (self.finished_at or time.monotonic()) - self.started


def _documents(body: str, attributes: Any) -> list[dict[str, Any]]:
    return [r.document for r in wire.decode_message(body, attributes) if isinstance(r, wire.Record)]


def _consume(workers: Sequence[Callable[[Progress], None]], progress: Progress) -> float:
    """Run each worker in a loop on its own thread until progress is done; seconds taken.
    Each worker finishes the message it holds, so what is counted is what is stored."""

    def loop(work: Callable[[Progress], None]) -> Callable[[], None]:
        def run() -> None:
            while not progress.done():
                work(progress)

        return run

    progress.started = time.monotonic()
    infra.run_all([loop(work) for work in workers])
    if not progress.count:
        raise TimeoutError("no record was stored within the time budget")
    return progress.seconds()


Worker = Callable[[Any, str, Any], Callable[[Progress], None]]


def _measure(
    name: str,
    documents: Sequence[dict[str, Any]],
    threads: int,
    worker: Worker,
    budget: float,
    bodies: Sequence[infra.Body] | None = None,
) -> dict[str, Any]:
    """Fill a fresh queue with `bodies` (by default one record per message), consume it
    on `threads` threads with `worker`; progress counts records."""
    client = infra.sqs_client()
    mongo = infra.mongo_client(pool=threads + 2)
    if bodies is None:
        bodies = infra.single_bodies(record_lines(list(documents)))
    with infra.temp_queue(client, name) as url, infra.temp_database(mongo, name) as db:
        infra.send_bodies(client, url, bodies)
        work = worker(client, url, mongo[db][COLLECTION])
        progress = Progress(len(documents), budget)
        seconds = _consume([work] * threads, progress)
        infra.check_stored(mongo, db, progress.count)
    mongo.close()
    return _result(progress.count, threads, seconds, len(bodies))


def _result(
    records: int, threads: int, seconds: float, messages: int | None = None
) -> dict[str, Any]:
    return {
        "records": records,
        "messages": records if messages is None else messages,
        "threads": threads,
        "seconds": round(seconds, 3),
        "rps": infra.rate(records, seconds),
    }


def _receive(client: Any, url: str) -> list[dict[str, Any]]:
    response = client.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
    )
    messages: list[dict[str, Any]] = response.get("Messages", [])
    return messages


# --------------------------------------------------------------------- naive


def _naive_worker(client: Any, url: str, collection: Any) -> Callable[[Progress], None]:
    def work(progress: Progress) -> None:
        for message in _receive(client, url):
            for document in _documents(message["Body"], message.get("MessageAttributes")):
                collection.insert_one(document)
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            progress.add(1)

    return work


def naive(documents: Sequence[dict[str, Any]], budget: float = TIMEOUT) -> dict[str, Any]:
    return _measure("naive", documents, 1, _naive_worker, budget)


# ------------------------------------------------------------- naive batched


def _batch_worker(
    documents_of: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> Worker:
    """receive 10, one unordered insert_many of their documents, one DeleteMessageBatch."""

    def worker(client: Any, url: str, collection: Any) -> Callable[[Progress], None]:
        def work(progress: Progress) -> None:
            messages = _receive(client, url)
            if not messages:
                return
            documents = documents_of(messages)
            collection.insert_many(documents, ordered=False)
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            client.delete_message_batch(QueueUrl=url, Entries=entries)
            progress.add(len(documents))

        return work

    return worker


# Our decoder, any format: the reference article's consumer with our wire format.
_batched_worker = _batch_worker(
    lambda messages: [
        d for m in messages for d in _documents(m["Body"], m.get("MessageAttributes"))
    ]
)


def naive_batched(documents: Sequence[dict[str, Any]], budget: float = TIMEOUT) -> dict[str, Any]:
    return _measure("naive_batched", documents, NAIVE_BATCHED_THREADS, _batched_worker, budget)


# -------------------------------------------------------------- json minimal


# The least a consumer of packed format 1 can do: split lines, json_util.loads each.
_json_minimal_worker = _batch_worker(
    lambda messages: [
        json_util.loads(line)["d"] for m in messages for line in m["Body"].split("\n") if line
    ]
)


def json_minimal(documents: Sequence[dict[str, Any]], budget: float = TIMEOUT) -> dict[str, Any]:
    bodies = infra.producer_bodies(documents, wire_format=1, compression="identity")
    return _measure("json_minimal", documents, NAIVE_BATCHED_THREADS, _json_minimal_worker,
                    budget, bodies)  # fmt: skip


# ---------------------------------------------------------------------- peer


def _peer_queue(url: str, handler: Callable[[list[dict[str, Any]]], None] | None = None) -> Any:
    """One sqs-workers queue on its own boto3 session (sessions are not thread-safe)."""
    from sqs_workers import SQSEnv
    from sqs_workers.batching import BatchMessages

    env = SQSEnv(session=boto3.session.Session(), codec="pickle")
    queue = env.queue(
        url.rsplit("/", 1)[-1], batching_policy=BatchMessages(PEER_BATCH), queue_url=url
    )
    if handler is not None:
        queue.connect_processor(PEER_JOB, handler)
    return queue


def _peer_fill(url: str, documents: Sequence[dict[str, Any]], threads: int = 4) -> None:
    """Through sqs-workers' own API: add_job inside add_batch() sends 10 per call."""
    parts = [documents[i::threads] for i in range(threads)]
    queues = [_peer_queue(url) for _ in parts]  # made here: boto3 setup is not thread-safe

    def fill(index: int) -> None:
        queue = queues[index]
        with queue.add_batch():
            for document in parts[index]:
                queue.add_job(PEER_JOB, document=document)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fill, range(threads)))


def peer(
    documents: Sequence[dict[str, Any]], budget: float = TIMEOUT, threads: int = PEER_THREADS
) -> dict[str, Any]:
    client = infra.sqs_client()
    mongo = infra.mongo_client(pool=threads + 2)
    with infra.temp_queue(client, "peer") as url, infra.temp_database(mongo, "peer") as db:
        _peer_fill(url, documents)
        collection = mongo[db][COLLECTION]
        progress = Progress(len(documents), budget)

        def store(batch: list[dict[str, Any]]) -> None:
            collection.insert_many([job["document"] for job in batch], ordered=False)
            progress.add(len(batch))

        queues = [_peer_queue(url, store) for _ in range(threads)]
        workers = [lambda _, q=q: q.process_batch(wait_seconds=1) for q in queues]
        seconds = _consume(workers, progress)
        infra.check_stored(mongo, db, progress.count)
    mongo.close()
    return _result(progress.count, threads, seconds)
