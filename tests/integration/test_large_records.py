"""Large records on the local stack (ElasticMQ, moto's S3 server, FerretDB), end to end:
alone in a message up to SQS's 1 MiB, through S3 past it, in the format of AWS's
extended clients; S3 down on either side; a consumer killed between write and delete."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from bson import Binary

from ingest.queues.base import REASON_ATTRIBUTE
from producer import Producer, wire
from tests.support.harness import Consumer, running, wait_until
from tests.support.queues import QueuePair, bucket_keys, drain_queue
from tests.support.tcpproxy import TcpProxy

VISIBILITY = 5
SIZES = (300_000, 900_000, 2_000_000, 15_000_000)
LINE = "user u-17 changed the billing address of account 4411 from Rue A to Rue B; "


class Calls:
    """Counts a boto3 client's API calls by operation, and SQS messages sent."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.counts: dict[str, int] = {}
        self.entries: list[dict[str, Any]] = []
        client.meta.events.register("provide-client-params.*.*", self._count)

    def _count(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.counts[model.name] = self.counts.get(model.name, 0) + 1
        if model.name == "SendMessageBatch":
            self.entries.extend(params["Entries"])


def _large_documents() -> list[dict[str, Any]]:
    rng = random.Random(26)
    documents: list[dict[str, Any]] = []
    for size in SIZES:
        documents.append({"_id": f"random-{size}", "blob": Binary(rng.randbytes(size))})
        documents.append({"_id": f"text-{size}", "blob": (LINE * (size // len(LINE) + 1))[:size]})
    return documents


def _digest(blob: Any) -> str:
    return hashlib.sha256(bytes(blob) if isinstance(blob, bytes) else blob.encode()).hexdigest()


def _producer(queue_url: str, bucket: str | None, tmp_path: Path, **options: Any) -> Producer:
    return Producer(
        queue_url, journal_dir=tmp_path / "journal", payload_bucket=bucket, linger_seconds=0.01,
        **options,
    )  # fmt: skip


def _consumer(queue: QueuePair, mongo_uri: str, db: Any, log: Path, bucket: str) -> Consumer:
    return Consumer(
        queue.url, mongo_uri, db.name, log, VISIBILITY,
        extra_env={"INGEST_PAYLOAD_BUCKET": bucket},
    )  # fmt: skip


def test_large_records_among_small_ones_land_intact_and_leave_the_bucket_empty(
    make_queue: Any, mongo_db: Any, mongo_uri: str, s3_client: Any, payload_bucket: str,
    tmp_path: Path, sqs_client: Any,
) -> None:  # fmt: skip
    queue = make_queue(visibility_timeout=VISIBILITY)
    sqs, s3 = Calls(boto3.client("sqs")), Calls(boto3.client("s3"))
    large = _large_documents()
    sent = {doc["_id"]: _digest(doc["blob"]) for doc in large}
    producer = Producer(
        queue.url, sqs_client=sqs.client, s3_client=s3.client, journal_dir=tmp_path / "j",
        payload_bucket=payload_bucket,
    )  # fmt: skip
    with producer:
        for n in range(1000):
            producer.send("events", {"_id": f"small-{n}", "n": n, "note": LINE})
            if n % 125 == 0 and large:
                producer.send("events", large.pop())
        assert producer.flush(120)
    assert producer.stats().sent == 1008 and producer.stats().failed == 0

    pointers = [e for e in sqs.entries if wire.SIZE_ATTRIBUTE in e["MessageAttributes"]]
    # Past 1 MiB as a message (base64 of what does not compress): through S3, one put each.
    assert len(pointers) == s3.counts["PutObject"] == 3
    assert all(len(e["MessageBody"]) < 300 for e in pointers)
    messages = [
        [wire.record_id(r) for r in wire.decode_message(e["MessageBody"], e["MessageAttributes"])]
        for e in sqs.entries
        if e not in pointers
    ]
    with_large = [
        ids for ids in messages if any(str(i).startswith(("random", "text")) for i in ids)
    ]
    assert len(with_large) == 5 and all(len(ids) == 1 for ids in with_large)  # each alone
    with_small = [ids for ids in messages if ids not in with_large]
    assert sum(len(ids) for ids in with_small) == 1000
    assert len(with_small) <= 12  # the small ones still packed (~80 KB of records, compressed)

    with running([_consumer(queue, mongo_uri, mongo_db, tmp_path / "c.log", payload_bucket)]):
        assert wait_until(lambda: mongo_db.events.count_documents({}) == 1008, 120, 0.5)
        assert wait_until(lambda: not bucket_keys(s3_client, payload_bucket), 30, 0.5)
    stored = {d["_id"]: _digest(d["blob"]) for d in mongo_db.events.find() if "blob" in d}
    assert stored == sent
    assert drain_queue(sqs_client, queue.dead_letter_url, wait=0) == []


EXTENDED_CLIENT = textwrap.dedent(
    """
    import sys
    import boto3
    import sqs_extended_client  # noqa: F401  (patches boto3's Session when imported)

    url, bucket, legacy = sys.argv[1], sys.argv[2], sys.argv[3] == "legacy"
    sqs = boto3.client("sqs")
    sqs.large_payload_support = bucket
    sqs.use_legacy_attribute = legacy
    sqs.send_message(QueueUrl=url, MessageBody=sys.stdin.read())
    """
)


@pytest.mark.parametrize("legacy", [False, True], ids=["pointer", "legacy-pointer"])
def test_a_message_from_awss_python_extended_client_is_consumed(
    make_queue: Any, mongo_db: Any, mongo_uri: str, s3_client: Any, payload_bucket: str,
    tmp_path: Path, legacy: bool,
) -> None:  # fmt: skip
    queue = make_queue(visibility_timeout=VISIBILITY)
    text = "z" * 300_000  # over the library's fixed 256 KiB: it goes through S3
    body = wire.encode_record("audit", {"_id": "from-extended-client", "text": text})
    # In a child process: the library patches boto3 for the whole process it runs in.
    subprocess.run(
        [sys.executable, "-c", EXTENDED_CLIENT, queue.url, payload_bucket,
         "legacy" if legacy else "current"],
        input=body, text=True, check=True, timeout=60,
    )  # fmt: skip
    [key] = bucket_keys(s3_client, payload_bucket)  # the library put it there
    with running([_consumer(queue, mongo_uri, mongo_db, tmp_path / "c.log", payload_bucket)]):
        assert wait_until(lambda: mongo_db.audit.count_documents({}) == 1, 60, 0.5)
        assert wait_until(lambda: not bucket_keys(s3_client, payload_bucket), 30, 0.5)
    assert mongo_db.audit.find_one()["text"] == text
    assert key.count("-") == 4  # the library's own key (a uuid4), not ours


def test_a_pointer_to_a_deleted_object_dead_letters_only_its_record_and_redrives(
    make_queue: Any, mongo_db: Any, mongo_uri: str, s3_client: Any, payload_bucket: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    queue = make_queue(visibility_timeout=VISIBILITY)
    rng = random.Random(7)
    with _producer(queue.url, payload_bucket, tmp_path) as producer:
        for name in ("a", "b", "c"):
            producer.send("events", {"_id": name, "blob": Binary(rng.randbytes(1_200_000))})
            producer.send("events", {"_id": f"small-{name}"})
    keys = bucket_keys(s3_client, payload_bucket)
    assert len(keys) == 3
    lost = s3_client.get_object(Bucket=payload_bucket, Key=keys[1])["Body"].read()
    s3_client.delete_object(Bucket=payload_bucket, Key=keys[1])

    consumer = _consumer(queue, mongo_uri, mongo_db, tmp_path / "c.log", payload_bucket)
    with running([consumer]):
        assert wait_until(lambda: mongo_db.events.count_documents({}) == 5, 60, 0.5)
        letters: list[dict[str, Any]] = []
        sqs = boto3.client("sqs")

        def dead_lettered() -> bool:
            letters.extend(drain_queue(sqs, queue.dead_letter_url, wait=0))
            return bool(letters)

        assert wait_until(dead_lettered, 30, 0.5)
        assert wait_until(lambda: bucket_keys(s3_client, payload_bucket) == [], 30, 0.5)
    [letter] = letters
    reason = letter["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
    assert reason == f"payload s3://{payload_bucket}/{keys[1]} is missing (NoSuchKey)"
    assert wire.parse_pointer(letter["Body"]).key == keys[1]  # the pointer is kept
    assert wire.SIZE_ATTRIBUTE in letter["MessageAttributes"]

    # The object comes back (restored from a backup, say): the dead letter is redriven.
    s3_client.put_object(Bucket=payload_bucket, Key=keys[1], Body=lost)
    attributes = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue")}
        for name, value in letter["MessageAttributes"].items()
    }
    sqs.send_message(QueueUrl=queue.dead_letter_url, MessageBody=letter["Body"],
                     MessageAttributes=attributes)  # fmt: skip
    redrive = subprocess.run(
        [str(Path(sys.executable).parent / "ingest"), "dlq", "redrive", "--queue-url", queue.url,
         "--method", "manual"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert redrive.returncode == 0, redrive.stderr
    assert json.loads(redrive.stdout)["moved"] == 1
    with running([consumer]):
        assert wait_until(lambda: mongo_db.events.count_documents({}) == 6, 60, 0.5)
        assert wait_until(lambda: bucket_keys(s3_client, payload_bucket) == [], 30, 0.5)


@pytest.fixture
def s3_proxy() -> Iterator[TcpProxy]:
    endpoint = os.environ["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)
    with TcpProxy("127.0.0.1", int(endpoint[1].strip("/"))) as proxy:
        yield proxy


def test_s3_down_journals_large_records_and_delivers_them_when_it_is_back(
    make_queue: Any, mongo_db: Any, mongo_uri: str, s3_client: Any, payload_bucket: str,
    tmp_path: Path, s3_proxy: TcpProxy,
) -> None:  # fmt: skip
    queue = make_queue(visibility_timeout=VISIBILITY)
    through_proxy = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_proxy.port}")
    s3_proxy.refuse()
    rng = random.Random(11)
    blobs = {f"big-{n}": Binary(rng.randbytes(1_100_000)) for n in range(3)}
    producer = Producer(
        queue.url, s3_client=through_proxy, journal_dir=tmp_path / "journal",
        payload_bucket=payload_bucket, probe_seconds=0.2, breaker_reset_seconds=0.5,
        retry_initial_seconds=0.01, retry_max_seconds=0.05,
    )  # fmt: skip
    consumer = Consumer(
        queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", VISIBILITY,
        extra_env={"INGEST_PAYLOAD_BUCKET": payload_bucket,
                   "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_proxy.port}"},
    )  # fmt: skip
    with producer, running([consumer]):
        for _id, blob in blobs.items():
            producer.send("events", {"_id": _id, "blob": blob})
        producer.send("events", {"_id": "small"})
        assert producer.flush(30)
        assert wait_until(lambda: producer.stats().journaled == 3, 30, 0.1)
        assert wait_until(lambda: mongo_db.events.count_documents({}) == 1, 30, 0.2)
        assert bucket_keys(s3_client, payload_bucket) == []
        s3_proxy.passthrough()  # S3 is back: the journal is replayed through it
        assert wait_until(lambda: mongo_db.events.count_documents({}) == 4, 60, 0.5)
        assert wait_until(lambda: bucket_keys(s3_client, payload_bucket) == [], 30, 0.5)
    assert producer.stats().replayed == 3 and producer.stats().failed == 0
    stored = {d["_id"]: bytes(d["blob"]) for d in mongo_db.events.find() if "blob" in d}
    assert stored == {k: bytes(v) for k, v in blobs.items()}
    assert drain_queue(boto3.client("sqs"), queue.dead_letter_url, wait=0) == []


def test_s3_down_at_the_consumer_hands_pointers_back_and_dead_letters_nothing(
    make_queue: Any, mongo_db: Any, mongo_uri: str, s3_client: Any, payload_bucket: str,
    tmp_path: Path, s3_proxy: TcpProxy,
) -> None:  # fmt: skip
    queue = make_queue(visibility_timeout=VISIBILITY, max_receive_count=3)
    with _producer(queue.url, payload_bucket, tmp_path) as producer:
        producer.send("events", {"_id": "big", "blob": Binary(random.randbytes(1_100_000))})
        producer.send("events", {"_id": "small"})
    s3_proxy.refuse()
    consumer = Consumer(
        queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", VISIBILITY,
        extra_env={"INGEST_PAYLOAD_BUCKET": payload_bucket,
                   "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_proxy.port}"},
    )  # fmt: skip
    with running([consumer]):
        assert wait_until(lambda: mongo_db.events.count_documents({}) == 1, 30, 0.2)
        # Handed back again and again, for longer than the queue's 3 receives take (a
        # warning at most every 10 s): never dead-lettered for it.
        assert wait_until(lambda: consumer.log_text().count("payload unavailable") >= 2, 60, 0.2)
        s3_proxy.passthrough()
        assert wait_until(lambda: mongo_db.events.count_documents({}) == 2, 60, 0.5)
        assert wait_until(lambda: bucket_keys(s3_client, payload_bucket) == [], 30, 0.5)
    assert drain_queue(boto3.client("sqs"), queue.dead_letter_url, wait=0) == []


def test_a_consumer_killed_between_write_and_delete_loses_and_duplicates_nothing(
    make_queue: Any, mongo_db: Any, mongo_uri: str, s3_client: Any, payload_bucket: str,
    tmp_path: Path, sqs_client: Any,
) -> None:  # fmt: skip
    queue = make_queue(visibility_timeout=VISIBILITY)
    blob = Binary(random.Random(3).randbytes(2_000_000))
    with _producer(queue.url, payload_bucket, tmp_path) as producer:
        producer.send("events", {"_id": "two-megabytes", "blob": blob})
    [key] = bucket_keys(s3_client, payload_bucket)
    sqs_endpoint = os.environ["AWS_ENDPOINT_URL_SQS"].rsplit(":", 1)
    with TcpProxy("127.0.0.1", int(sqs_endpoint[1].strip("/"))) as slow_sqs:
        # The delete after the write is held past the kill, so it never reaches SQS while
        # this consumer lives (a shorter hold could let it through on a busy machine).
        # Only the delete: holding every call made the consumer's start-up check and long
        # polls time out there, and the record was never written.
        slow_sqs.delay(60_000, requests_containing=b"DeleteMessage")
        consumer = Consumer(
            queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log", VISIBILITY,
            extra_env={"INGEST_PAYLOAD_BUCKET": payload_bucket,
                       "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{slow_sqs.port}"},
        )  # fmt: skip
        consumer.start()
        try:
            assert wait_until(lambda: mongo_db.events.count_documents({}) == 1, 90, 0.05)
            consumer.kill()
        finally:
            consumer.stop()
    # Killed after the write, before the delete: the message and its payload are still there.
    depth = sqs_client.get_queue_attributes(
        QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert depth["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert bucket_keys(s3_client, payload_bucket) == [key]
    again = _consumer(queue, mongo_uri, mongo_db, tmp_path / "c2.log", payload_bucket)
    with running([again]):
        assert wait_until(lambda: bucket_keys(s3_client, payload_bucket) == [], 60, 0.5)
    assert [bytes(d["blob"]) for d in mongo_db.events.find()] == [bytes(blob)]
    assert drain_queue(sqs_client, queue.url, wait=0) == []
    assert drain_queue(sqs_client, queue.dead_letter_url, wait=0) == []


def test_max_message_bytes_of_1_mib_alone_is_accepted_where_the_queue_allows_it(
    make_queue: Any, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue()
    calls = Calls(boto3.client("sqs"))
    rng = random.Random(5)
    with Producer(queue.url, sqs_client=calls.client, journal_dir=tmp_path / "j",
                  max_message_bytes=1048576, compression="identity") as producer:  # fmt: skip
        for n in range(40):
            producer.send("events", {"_id": n, "blob": Binary(rng.randbytes(20_000))})
    assert producer.stats().sent == 40
    sizes = [len(e["MessageBody"]) + wire.attributes_size(e["MessageAttributes"])
             for e in calls.entries]  # fmt: skip
    assert max(sizes) > 256 * 1024 and max(sizes) <= 1048576  # packed past the old 256 KiB
    assert len(calls.entries) <= 2
    assert calls.counts["GetQueueAttributes"] == 1  # the queue's limit, read once
    received = drain_queue(sqs_client, queue.url)
    assert sum(len(wire.decode_message(m["Body"], m["MessageAttributes"])) for m in received) == 40
