"""Queues and buckets as the tests see them: a queue with its dead-letter queue, and
reading back what a queue or a bucket holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producer import wire


@dataclass(frozen=True)
class QueuePair:
    url: str
    dead_letter_url: str
    name: str


def drain_queue(sqs_client: Any, url: str, wait: int = 1) -> list[dict[str, Any]]:
    """Receive and delete everything in a queue; returns the messages."""
    messages: list[dict[str, Any]] = []
    while True:
        got = sqs_client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])
        if not got:
            return messages
        messages.extend(got)
        sqs_client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


def bucket_keys(s3_client: Any, bucket: str) -> list[str]:
    found = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [str(entry["Key"]) for entry in found]


def received_records(sqs_client: Any, url: str) -> list[wire.Record]:
    """Every record in a queue, its messages received and deleted."""
    records: list[wire.Record] = []
    for message in drain_queue(sqs_client, url):
        for item in wire.decode_message(message["Body"], message.get("MessageAttributes")):
            assert isinstance(item, wire.Record), item
            records.append(item)
    return records
