"""`ingest init`: the queue, its dead-letter queue with a redrive policy, and MongoDB's side."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pymongo.database import Database


@dataclass(frozen=True)
class Provisioned:
    queue_url: str
    dead_letter_url: str


def create_queues(
    client: Any,
    name: str,
    *,
    visibility_timeout: int = 30,
    max_receive_count: int = 5,
    retention_seconds: int = 1209600,
    kms_key_id: str | None = None,
) -> Provisioned:
    """Idempotent: existing queues get their attributes set to these values."""
    fifo = name.endswith(".fifo")
    base = name.removesuffix(".fifo")
    common: dict[str, str] = {"MessageRetentionPeriod": str(retention_seconds)}
    if fifo:
        common["FifoQueue"] = "true"
    if kms_key_id:
        common["KmsMasterKeyId"] = kms_key_id
    else:
        common["SqsManagedSseEnabled"] = "true"
    dlq_url = _create_or_update(client, f"{base}-dlq{'.fifo' if fifo else ''}", common)
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    attributes = {
        **common,
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps(policy),
    }
    return Provisioned(_create_or_update(client, name, attributes), dlq_url)


def _create_or_update(client: Any, name: str, attributes: dict[str, str]) -> str:
    try:
        return str(client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as exc:
        if "QueueAlreadyExists" not in str(exc) and "QueueNameExists" not in str(exc):
            if "SqsManagedSseEnabled" in str(exc) or "InvalidAttributeName" in str(exc):
                # Older SQS-compatible servers do not know server-side encryption attributes.
                trimmed = {k: v for k, v in attributes.items() if "Sse" not in k and "Kms" not in k}
                return _create_or_update(client, name, trimmed)
            raise
    url = str(client.get_queue_url(QueueName=name)["QueueUrl"])
    mutable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
    client.set_queue_attributes(QueueUrl=url, Attributes=mutable)
    return url


def prepare_database(db: Database[dict[str, Any]], collections: list[str]) -> list[str]:
    """Creates the named collections (their _id index comes with them). Idempotent."""
    existing = set(db.list_collection_names())
    for name in collections:
        if name not in existing:
            db.create_collection(name)
    return sorted(set(collections) | existing)
