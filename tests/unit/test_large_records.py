"""Large records, fast: the pointer format, the consumer on the in-memory seams (fetch,
dead letters that keep the pointer, S3 down, deletes after the SQS delete), and the
producer's offloader on moto's in-process S3 (its failures, judged by what S3 did)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from bson import Binary

from ingest.cli.options import service_options
from ingest.payloads import MemoryPayloads
from ingest.pipeline.service import Service
from ingest.queues.base import REASON_ATTRIBUTE
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.memory import MemorySink
from producer import ConfigError, Producer, wire
from tests.support.producer_fakes import FakeSQS
from tests.support.waiting import wait_until

BUCKET = "payloads"

# --------------------------------------------------------------------- the format


def test_the_pointer_is_the_extended_clients_json_and_reads_both_versions() -> None:
    pointer = wire.PayloadPointer("my-bucket", "ingest-payloads/0b6c7f0e")
    body = wire.pointer_body(pointer)
    assert body == (
        '["software.amazon.payloadoffloading.PayloadS3Pointer",'
        '{"s3BucketName":"my-bucket","s3Key":"ingest-payloads/0b6c7f0e"}]'
    )
    assert wire.parse_pointer(body) == pointer
    legacy = json.dumps(["com.amazon.sqs.javamessaging.MessageS3Pointer", {"s3BucketName": "b",
                         "s3Key": "k"}])  # fmt: skip
    assert wire.parse_pointer(legacy) == wire.PayloadPointer("b", "k")
    attributes = wire.pointer_attributes(wire.message_attributes(wire.ZSTD, 1, "2"), 1234)
    assert attributes["ExtendedPayloadSize"] == {"DataType": "Number", "StringValue": "1234"}
    assert wire.is_pointer(attributes) and wire.is_pointer({"SQSLargePayloadSize": {}})
    assert wire.payload_attributes(attributes) == wire.message_attributes(wire.ZSTD, 1, "2")


@pytest.mark.parametrize(
    "body", ["not json", "[]", '["x", {"s3BucketName": "b", "s3Key": "k"}]',
             f'["{wire.POINTER_CLASS}", {{"s3BucketName": "b"}}]', "[" * 5000],
)  # fmt: skip
def test_a_body_that_is_not_a_pointer_is_a_wire_error(body: str) -> None:
    with pytest.raises(wire.WireError):
        wire.parse_pointer(body)


# ------------------------------------------------------------------ the consumer


def _settings(**overrides: object) -> Settings:
    base = dict(queue_urls=("memory://q",), wait_seconds=0, metrics_port=0, exit_when_idle=0.5,
                retry_base_seconds=0.05, retry_max_seconds=0.05)  # fmt: skip
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def _run(service: Service, timeout: float = 20) -> None:
    service.start()
    assert service.wait(timeout), "service did not go idle"
    service.stop()


def _offloaded(queue: MemoryQueue, payloads: MemoryPayloads, key: str, *ids: object) -> str:
    """A pointer message in `queue` to a format-2 payload of records `ids` in `payloads`."""
    raw = wire.pack_bson([("events", wire.encode_document({"_id": i}), None) for i in ids])
    body = wire.bson_body(raw, wire.ZSTD)
    pointer = wire.PayloadPointer(BUCKET, key)
    payloads.put(pointer, body.encode())
    attributes = wire.message_attributes(wire.ZSTD, len(ids), wire.BSON_RECORDS)
    pointer_body = wire.pointer_body(pointer)
    queue.send(pointer_body, wire.pointer_attributes(attributes, len(body)))
    return pointer_body


def test_pointer_payloads_are_written_and_deleted_after_their_message() -> None:
    queue = MemoryQueue(url="memory://q")
    payloads = MemoryPayloads()
    for n in range(5):
        _offloaded(queue, payloads, f"k{n}", *range(n * 10, n * 10 + 10))
    queue.send(wire.encode_record("events", {"_id": "small"}))
    sink = MemorySink()
    service = Service(service_options(_settings()), {queue.url: queue}, sink, payloads=payloads)
    _run(service)
    assert sink.count("events") == 51 and len(queue) == 0
    assert payloads.objects == {}
    assert service.metrics.payloads_deleted._value.get() == 5


def test_keep_payloads_leaves_them() -> None:
    queue = MemoryQueue(url="memory://q")
    payloads = MemoryPayloads()
    _offloaded(queue, payloads, "k", 1, 2)
    sink = MemorySink()
    _run(
        Service(
            service_options(_settings(keep_payloads=True)),
            {queue.url: queue},
            sink,
            payloads=payloads,
        )
    )
    assert sink.count("events") == 2 and len(payloads.objects) == 1 and payloads.deleted == []


def test_a_refused_record_dead_letters_the_pointer_and_keeps_its_payload() -> None:
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead)
    payloads = MemoryPayloads()
    pointer = _offloaded(queue, payloads, "k", 1, 2, 3)
    sink = MemorySink()
    service = Service(
        service_options(_settings(allow_collections=("audit",))),
        {queue.url: queue},
        sink,
        payloads=payloads,
    )
    _run(service)
    [letter] = dead._messages.values()
    assert letter.body == pointer  # one letter for the message, as it came
    assert wire.attribute_value(letter.attributes, wire.SIZE_ATTRIBUTE) is not None
    assert "allow-list" in str(wire.attribute_value(letter.attributes, REASON_ATTRIBUTE))
    assert len(payloads.objects) == 1  # a redrive will need it
    assert sink.count("events") == 0 and len(queue) == 0


def test_a_missing_payload_dead_letters_only_its_message() -> None:
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead)
    payloads = MemoryPayloads()
    _offloaded(queue, payloads, "kept", 1)
    gone = _offloaded(queue, payloads, "gone", 2)
    payloads.objects.pop((BUCKET, "gone"))
    sink = MemorySink()
    _run(Service(service_options(_settings()), {queue.url: queue}, sink, payloads=payloads))
    [letter] = dead._messages.values()
    assert letter.body == gone
    reason = wire.attribute_value(letter.attributes, REASON_ATTRIBUTE)
    assert reason == f"payload s3://{BUCKET}/gone is missing (NoSuchKey)"
    assert sink.count("events") == 1


def test_s3_down_hands_the_pointer_back_without_counting_attempts() -> None:
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead, max_receive_count=2)
    payloads = MemoryPayloads()
    _offloaded(queue, payloads, "k", 1, 2)
    queue.send(wire.encode_record("events", {"_id": "small"}))
    payloads.down = True
    sink = MemorySink()
    service = Service(
        service_options(_settings(exit_when_idle=None)), {queue.url: queue}, sink, payloads=payloads
    )
    service.start()
    try:
        seen = service.metrics.payload_failures
        assert wait_until(lambda: seen._value.get() >= 4)  # more receives than maxReceiveCount
        assert sink.count("events") == 1 and len(dead) == 0
        payloads.down = False
        assert wait_until(lambda: sink.count("events") == 3 and len(queue) == 0)
    finally:
        service.stop()
    assert len(dead) == 0 and payloads.objects == {}


def test_a_pointer_to_another_bucket_is_refused_when_the_bucket_is_named() -> None:
    from ingest.payloads.base import PayloadRefused
    from ingest.payloads.s3 import S3Payloads

    store = S3Payloads(boto3.client("s3", region_name="us-east-1"), bucket="ours")
    with pytest.raises(PayloadRefused, match="not in the payload bucket 'ours'"):
        store.fetch(wire.PayloadPointer("theirs", "k"), 100)


def test_a_bad_payload_bucket_setting_is_one_line() -> None:
    from ingest.errors import ConfigError as IngestConfigError

    with pytest.raises(IngestConfigError, match=r"^INGEST_PAYLOAD_BUCKET=Bad_Bucket: .*S3 bucket"):
        Settings.from_env({"INGEST_PAYLOAD_BUCKET": "Bad_Bucket"})


# ------------------------------------------------------------------ the producer


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from moto import mock_aws

    # moto's in-process S3, never a server an endpoint variable names (the local stack's).
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _producer(tmp_path: Path, fake: Any, s3_client: Any, **options: Any) -> Producer:
    return Producer(
        "http://sqs.local/000000000000/q", sqs_client=fake, s3_client=s3_client,
        journal_dir=tmp_path / "journal", payload_bucket=BUCKET, retry_initial_seconds=0.001,
        retry_max_seconds=0.002, **options,
    )  # fmt: skip


def _big() -> dict[str, Any]:
    return {"blob": Binary(random.Random(1).randbytes(1_100_000))}


def test_past_one_message_the_body_goes_to_s3_and_a_pointer_to_sqs(tmp_path: Path, s3: Any) -> None:
    fake = FakeSQS()
    with _producer(tmp_path, fake, s3) as producer:
        oid = producer.send("events", _big())
        producer.send("events", {"n": 1})
    [pointer_entry] = [
        e for _, es in fake.calls for e in es if wire.is_pointer(e["MessageAttributes"])
    ]
    pointer = wire.parse_pointer(pointer_entry["MessageBody"])
    assert pointer.bucket == BUCKET and pointer.key.startswith("ingest-payloads/")
    payload = s3.get_object(Bucket=BUCKET, Key=pointer.key)["Body"].read().decode()
    size = pointer_entry["MessageAttributes"]["ExtendedPayloadSize"]["StringValue"]
    assert int(size) == len(payload)
    [record] = wire.decode_message(
        payload, wire.payload_attributes(pointer_entry["MessageAttributes"])
    )
    assert isinstance(record, wire.Record) and wire.record_id(record) == oid


class _FailingS3:
    """An S3 client whose puts fail with `error`; deletes are recorded."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.puts = 0
        self.deletes: list[str] = []

    def put_object(self, **_: Any) -> None:
        self.puts += 1
        raise self.error

    def delete_object(self, Bucket: str, Key: str) -> None:
        self.deletes.append(Key)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )  # type: ignore[arg-type]


def test_s3_unreachable_journals_the_record_without_retries(tmp_path: Path) -> None:
    s3 = _FailingS3(EndpointConnectionError(endpoint_url="http://s3"))
    fake = FakeSQS()
    with _producer(tmp_path, fake, s3) as producer:
        producer.send("events", _big())
        producer.send("events", {"n": 1})
        assert producer.flush(5)
        assert producer.stats().journaled == 1 and producer.stats().sent == 1
    # No retries (a live put, and one more when close() replays the journal), and nothing
    # reached S3: nothing to clean up.
    assert s3.puts <= 2 and s3.deletes == []


def test_s3_failing_after_retries_journals_and_deletes_what_may_be_written(tmp_path: Path) -> None:
    s3 = _FailingS3(_client_error("InternalError", 500))
    with _producer(tmp_path, FakeSQS(), s3, max_attempts=3) as producer:
        producer.send("events", _big())
        assert producer.flush(5)
        assert producer.stats().journaled == 1
    assert s3.puts % 3 == 0 and len(s3.deletes) == s3.puts // 3  # per try: 3 puts, 1 delete


def test_s3_refusing_the_request_rejects_the_record(tmp_path: Path) -> None:
    s3 = _FailingS3(_client_error("EntityTooLarge", 400))
    failed: list[str] = []
    with _producer(tmp_path, FakeSQS(), s3) as producer:
        producer._on_error = None
        producer._sender._on_error = lambda records, reason: failed.append(reason)
        producer.send("events", _big())
        assert producer.flush(5)
        assert producer.stats().failed == 1 and producer.stats().journaled == 0
    assert s3.puts == 1 and "EntityTooLarge" in failed[0]  # never tried again
    assert "EntityTooLarge" in (tmp_path / "journal" / "rejected.jsonl").read_text()


def test_access_denied_journals_and_says_so(tmp_path: Path, caplog: Any) -> None:
    s3 = _FailingS3(_client_error("AccessDenied", 403))
    with caplog.at_level(logging.ERROR), _producer(tmp_path, FakeSQS(), s3) as producer:
        producer.send("events", _big())
        assert producer.flush(5)
        assert producer.stats().journaled == 1 and producer.stats().failed == 0
    assert any("AccessDenied" in r.getMessage() for r in caplog.records)


def test_a_pointer_sqs_refuses_has_its_object_deleted(tmp_path: Path, s3: Any) -> None:
    from tests.support.producer_fakes import fail_entries

    fake = FakeSQS(fail_entries(1, sender_fault=True, code="InvalidMessageContents"))
    with _producer(tmp_path, fake, s3) as producer:
        producer.send("events", _big())
        assert producer.flush(5)
        assert producer.stats().failed == 1
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_queue_smaller_than_sqss_limit_caps_the_messages(tmp_path: Path, caplog: Any) -> None:
    class SmallQueue(FakeSQS):
        asked = 0

        def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
            SmallQueue.asked += 1
            return {"Attributes": {"MaximumMessageSize": "262144"}}

    fake = SmallQueue()
    rng = random.Random(2)
    with caplog.at_level(logging.WARNING), Producer(
        "http://sqs.local/000000000000/q", sqs_client=fake, journal_dir=tmp_path / "j",
        max_message_bytes=1048576, compression="identity",
    ) as producer:  # fmt: skip
        for n in range(30):
            producer.send("events", {"_id": n, "blob": Binary(rng.randbytes(20_000))})
        assert producer.flush(5)
        # Between the queue's 256 KiB and SQS's 1 MiB, without a bucket: refused, naming it.
        producer.send("events", {"blob": Binary(rng.randbytes(500_000))})
        assert producer.flush(5)
    sizes = [len(e["MessageBody"]) + wire.attributes_size(e["MessageAttributes"])
             for _, es in fake.calls for e in es]  # fmt: skip
    assert max(sizes) <= 262144 and SmallQueue.asked == 1
    assert producer.stats().sent == 30 and producer.stats().failed == 1
    assert "max_message_bytes=1048576 is lowered to it" in caplog.text
    rejected = (tmp_path / "j" / "rejected.jsonl").read_text()
    assert "MaximumMessageSize (262144): set payload_bucket" in rejected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_message_bytes": 1048576}, None),
        ({"max_message_bytes": 1048576, "max_batch_bytes": 1048576}, None),
        ({"max_message_bytes": 262144, "max_batch_bytes": 100000},
         "max_batch_bytes=100000 is below max_message_bytes=262144: raise max_batch_bytes"),
        ({"max_batch_bytes": 2000000}, "max_batch_bytes=2000000: lower it to 1048576"),
        ({"max_message_bytes": 2000000}, "max_message_bytes=2000000: must be 1024 to 1048576"),
        ({"payload_bucket": "a"}, "payload_bucket: 'a' is not an S3 bucket name"),
    ],
)  # fmt: skip
def test_size_settings_accept_any_valid_combination_and_name_what_to_change(
    tmp_path: Path, options: dict[str, Any], message: str | None
) -> None:
    def make() -> Producer:
        return Producer(
            "http://sqs.local/1/q", sqs_client=FakeSQS(), journal_dir=tmp_path, **options
        )

    if message is None:
        make().close()
        return
    with pytest.raises(ConfigError) as refused:
        make()
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_the_bucket_comes_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INGEST_PAYLOAD_BUCKET", "from-env")
    with Producer("http://sqs.local/1/q", sqs_client=FakeSQS(), journal_dir=tmp_path) as producer:
        assert producer.config.payload_bucket == "from-env"
