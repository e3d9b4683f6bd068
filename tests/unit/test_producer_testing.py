"""producer.testing: the same API and checks as Producer, nothing sent, what was sent kept."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from producer import Producer, ProducerClosed, RecordTooLarge, WireError
from producer.testing import RecordingProducer
from tests.support.producer_fakes import FakeSQS

BAD_INPUTS: list[tuple[str, Any]] = [
    ("system.users", {"n": 1}),
    ("events", {"_id": [1, 2]}),
    ("events", {"$set": {"a": 1}}),
    ("events", {"n": 2**70}),
    ("events", {"u": uuid.uuid4()}),
    ("events", {1: "a non-string key"}),
    ("events", ["not", "a", "document"]),
    # too large for one SQS message, and no payload bucket
    ("events", {"blob": random.Random(1).randbytes(1_100_000)}),
]


@pytest.mark.parametrize(("collection", "document"), BAD_INPUTS)
def test_it_refuses_what_the_producer_refuses(
    collection: str, document: Any, tmp_path: Path
) -> None:
    real = Producer("http://sqs.local/1/q", sqs_client=FakeSQS(), journal_dir=tmp_path)
    with real, pytest.raises(WireError) as refused:
        real.send(collection, document)
    with RecordingProducer() as double, pytest.raises(type(refused.value), match=r"."):
        double.send(collection, document)


def test_it_keeps_what_was_sent_as_the_consumer_reads_it(
    recording_producer: RecordingProducer,
) -> None:
    oid = recording_producer.send("audit", {"user": "u1", "action": "login"})
    recording_producer.send("events", {"_id": 7, "kind": "click"}, partition_key="u1")
    assert isinstance(oid, ObjectId)
    assert recording_producer.documents("audit") == [{"_id": oid, "user": "u1", "action": "login"}]
    assert [s.partition_key for s in recording_producer.sent] == [None, "u1"]
    assert recording_producer.stats().accepted == 2 and recording_producer.flush()
    recording_producer.close()
    with pytest.raises(ProducerClosed):
        recording_producer.send("audit", {})


def test_its_options_are_checked_as_the_producers_are() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        RecordingProducer(max_message_bytes=10)
    small = RecordingProducer(max_message_bytes=2048, compression="identity")
    small.send("events", {"pad": "x" * 3000})  # past the packing budget: it travels alone
    with pytest.raises(RecordTooLarge, match="payload_bucket"):
        small.send("events", {"pad": "x" * 1_100_000})
    offloading = RecordingProducer(compression="identity", payload_bucket="payloads")
    offloading.send("events", {"pad": "x" * 1_100_000})  # through S3
    assert len(offloading.sent) == 1


def test_format_1_is_recorded_too() -> None:
    double = RecordingProducer(wire_format=1)
    double.send("events", {"_id": "a", "text": "日本"})
    assert double.documents() == [{"_id": "a", "text": "日本"}]
