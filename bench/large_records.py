"""Large records on the local stack (ElasticMQ, moto's S3 server, FerretDB): what each
kind of record costs, and how long a 2 MB one takes from send() to MongoDB.

1. SQS requests per record, as SQS bills them (each request costs ceil(payload / 64 KiB),
   at least 1) and as API calls, for the whole round trip (the producer's sends, the
   consumer's receives and deletes), and S3 requests per record: for 1,000 small records
   (packed), for 300 KB records (alone in a message) and for 2 MB ones (through S3).
   The consumer here is the real pipeline (ingest.pipeline.service.Service) in this
   process, its boto3 clients counted.
2. The time from send() to the document being readable in MongoDB, for a 2 MB record
   (random: through S3; repetitive text: compressed, alone in a message), median of a
   few, against a 1 KB record in the same run (the baseline: the ratio is the cost of
   the size).
3. AWS's Python extended client (amazon-sqs-extended-client 1.0.1, in a child process:
   it patches boto3 when imported) against this producer, sending the same 2 MB bodies:
   seconds per record until SQS has the pointer, and its requests per record.

    python -m bench.large_records [--quick]      (one JSON object on stdout)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from bson import Binary
from pymongo import MongoClient

from ingest.cli.options import service_options
from ingest.payloads.s3 import S3Payloads
from ingest.pipeline.service import Service
from ingest.queues.sqs import SqsService
from ingest.settings import Settings
from ingest.sinks import mongo
from producer import Producer

CHUNK = 64 * 1024


class Counted:
    """A boto3 client whose calls are counted: API calls and billed requests (64 KiB
    chunks of each request's payload, or of what a receive brought back)."""

    def __init__(self, service: str) -> None:
        self.client = boto3.client(service)
        self.calls: dict[str, int] = {}
        self.billed = 0
        events = self.client.meta.events
        events.register("provide-client-params.*.*", self._before)
        events.register("after-call.*.*", self._after)

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls[model.name] = self.calls.get(model.name, 0) + 1
        if model.name in ("SendMessageBatch", "SendMessage"):
            entries = params.get("Entries") or [params]
            size = sum(
                _payload(e.get("MessageBody", ""), e.get("MessageAttributes")) for e in entries
            )
            self.billed += max(1, math.ceil(size / CHUNK))
        elif model.name != "ReceiveMessage":
            self.billed += 1

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        if model.name == "ReceiveMessage":
            size = sum(
                _payload(m.get("Body", ""), m.get("MessageAttributes"))
                for m in parsed.get("Messages", [])
            )
            self.billed += max(1, math.ceil(size / CHUNK))

    def reset(self) -> None:
        self.calls, self.billed = {}, 0


def _payload(body: str, attributes: dict[str, Any] | None) -> int:
    size = len(body.encode())
    for name, value in (attributes or {}).items():
        size += len(name) + len(value.get("DataType", "")) + len(str(value.get("StringValue", "")))
    return size


@contextmanager
def stack(quick: bool) -> Iterator[dict[str, Any]]:
    """A queue, a bucket, a database, and the consumer running on them (counted)."""
    sqs_admin, s3_admin = boto3.client("sqs"), boto3.client("s3")
    name = f"bench-large-{uuid.uuid4().hex[:8]}"
    url = sqs_admin.create_queue(QueueName=name)["QueueUrl"]
    bucket = name
    s3_admin.create_bucket(Bucket=bucket)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    sqs, s3 = Counted("sqs"), Counted("s3")
    settings = Settings(
        queue_urls=(url,), mongo_uri=os.environ["INGEST_MONGO_URI"], database=database,
        metrics_port=0, payload_bucket=bucket, wait_seconds=1, max_pollers=0, pollers=1,
    )  # fmt: skip
    queues = {url: SqsService(sqs.client).queue(url)}
    sink = mongo.connect(settings.mongo_uri, database)
    service = Service(
        service_options(settings), queues, sink, payloads=S3Payloads(s3.client, bucket)
    )
    service.start()
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo_uri)
    try:
        yield {"url": url, "bucket": bucket, "db": client[database], "sqs": sqs, "s3": s3}
    finally:
        service.stop(10)
        client.drop_database(database)
        sqs_admin.delete_queue(QueueUrl=url)
        for entry in s3_admin.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3_admin.delete_object(Bucket=bucket, Key=entry["Key"])
        s3_admin.delete_bucket(Bucket=bucket)


def _wait(predicate: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the records did not arrive")
        time.sleep(0.005)


def _producer(env: dict[str, Any], journal: str, sqs: Any = None, s3: Any = None) -> Producer:
    return Producer(env["url"], sqs_client=sqs, s3_client=s3, journal_dir=journal,
                    payload_bucket=env["bucket"], linger_seconds=0.005)  # fmt: skip


def requests_per_record(
    env: dict[str, Any], kind: str, documents: list[dict[str, Any]]
) -> dict[str, Any]:
    """The round trip's requests per record for these documents, sent together."""
    consumer_sqs, consumer_s3 = env["sqs"], env["s3"]
    producer_sqs, producer_s3 = Counted("sqs"), Counted("s3")
    collection = env["db"][kind]
    with tempfile.TemporaryDirectory() as journal:
        time.sleep(2.5)  # the consumer's empty long polls before the run are not counted
        consumer_sqs.reset()
        consumer_s3.reset()
        with _producer(env, journal, producer_sqs.client, producer_s3.client) as producer:
            for document in documents:
                producer.send(kind, document)
        _wait(lambda: collection.count_documents({}) == len(documents))
        _wait(
            lambda: (
                consumer_s3.calls.get("DeleteObject", 0) >= consumer_s3.calls.get("GetObject", 0)
            )
        )
        time.sleep(2.5)  # let the deletes finish; the idle polls after are subtracted below
    n = len(documents)
    idle_polls = 2  # ~1 per 1 s long poll while idle, before and after (wait_seconds=1)
    receives = max(1, consumer_sqs.calls.get("ReceiveMessage", 0) - idle_polls)
    sqs_billed = producer_sqs.billed + consumer_sqs.billed - idle_polls
    s3_calls = sum(producer_s3.calls.values()) + sum(consumer_s3.calls.values())
    return {
        "records": n,
        "sqs_billed_requests_per_record": round(sqs_billed / n, 4),
        "sqs_calls_per_record": {
            "send": round(producer_sqs.calls.get("SendMessageBatch", 0) / n, 4),
            "receive": round(receives / n, 4),
            "delete": round(consumer_sqs.calls.get("DeleteMessageBatch", 0) / n, 4),
        },
        "s3_requests_per_record": round(s3_calls / n, 4),
        "s3_calls": {
            **producer_s3.calls,
            **{f"consumer {k}": v for k, v in consumer_s3.calls.items()},
        },
    }


def end_to_end_seconds(
    env: dict[str, Any], make: Callable[[int], dict[str, Any]], runs: int
) -> float:
    """Median seconds from send() to the document readable in MongoDB, one at a time."""
    collection = env["db"]["latency"]
    times = []
    with tempfile.TemporaryDirectory() as journal, _producer(env, journal) as producer:
        for n in range(runs):
            document = make(n)
            started = time.perf_counter()
            record_id = producer.send("latency", document)
            query = {"_id": record_id}
            _wait(lambda query=query: collection.find_one(query, {"_id": 1}) is not None)
            times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


LIBRARY = textwrap.dedent(
    """
    import json, sys, time
    import boto3
    import sqs_extended_client  # noqa: F401  (patches boto3's Session when imported)

    url, bucket, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    body = sys.stdin.read()
    sqs = boto3.client("sqs")
    sqs.large_payload_support = bucket
    calls = {}
    def count_call(model, **_):
        calls[model.name] = calls.get(model.name, 0) + 1
    sqs.meta.events.register("provide-client-params.*.*", count_call)
    sqs.s3_client.meta.events.register("provide-client-params.*.*", count_call)
    started = time.perf_counter()
    for _ in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    print(json.dumps({"seconds": time.perf_counter() - started, "calls": calls}))
    """
)


def library_against_ours(env: dict[str, Any], runs: int) -> dict[str, Any]:
    """Sending a 2 MB record: AWS's Python extended client against this producer."""
    from producer import wire

    rng = random.Random(9)
    documents = [{"_id": f"lib-{n}", "blob": Binary(rng.randbytes(2_000_000))} for n in range(runs)]
    # The same body this producer would put in S3: one record, format 2, zstd (which does not pay).
    body = wire.bson_body(
        wire.pack_bson([("library", wire.encode_document(documents[0]), None)]), wire.IDENTITY
    )
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY, env["url"], env["bucket"], str(runs)],
        input=body, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    library = json.loads(done.stdout)
    sqs, s3 = Counted("sqs"), Counted("s3")
    with (
        tempfile.TemporaryDirectory() as journal,
        _producer(env, journal, sqs.client, s3.client) as producer,
    ):
        started = time.perf_counter()
        for document in documents:
            producer.send("ours", document)
            producer.flush()
        ours = time.perf_counter() - started
    _wait(lambda: env["db"]["ours"].count_documents({}) == runs)
    own_calls = {**sqs.calls, **s3.calls}
    return {
        "records": runs,
        "library_seconds_per_record": round(library["seconds"] / runs, 4),
        "ours_seconds_per_record": round(ours / runs, 4),
        "ours_over_library": round(ours / library["seconds"], 2),
        "library_calls_per_record": {k: v / runs for k, v in library["calls"].items()},
        "ours_calls_per_record": {k: v / runs for k, v in own_calls.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else 7
    rng = random.Random(26)
    text = "user u-17 changed the billing address of account 4411 from Rue A to Rue B; "
    results: dict[str, Any] = {}
    with stack(args.quick) as env:
        small = [{"n": n, "note": text * 3} for n in range(1000)]
        alone = [{"blob": Binary(rng.randbytes(300_000))} for _ in range(10)]
        offloaded = [{"blob": Binary(rng.randbytes(2_000_000))} for _ in range(10)]
        results["small_1kb"] = requests_per_record(env, "small", small)
        results["alone_300kb"] = requests_per_record(env, "alone", alone)
        results["s3_2mb"] = requests_per_record(env, "offloaded", offloaded)
        baseline = end_to_end_seconds(env, lambda n: {"note": text * 13}, runs)
        random_2mb = end_to_end_seconds(
            env, lambda n: {"blob": Binary(rng.randbytes(2_000_000))}, runs
        )
        text_2mb = end_to_end_seconds(env, lambda n: {"text": (text * 27000)[:2_000_000]}, runs)
        results["end_to_end_seconds"] = {
            "runs": runs,
            "record_1kb (baseline)": baseline,
            "record_2mb_random (through S3)": random_2mb,
            "record_2mb_text (compressed, alone)": text_2mb,
            "random_2mb_over_baseline": round(random_2mb / baseline, 1),
            "text_2mb_over_baseline": round(text_2mb / baseline, 1),
        }
        results["library_against_ours_2mb_send"] = library_against_ours(env, runs)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
