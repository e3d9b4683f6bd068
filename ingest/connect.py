"""Builds the real queue and sink from settings: boto3 and pymongo clients, nothing else."""

from __future__ import annotations

import re
from typing import Any

import boto3
from botocore.config import Config
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from ingest.errors import ConfigError, QueueUnavailable
from ingest.queue import SqsQueue
from ingest.settings import Settings
from ingest.sink import MongoSink

_URI_PASSWORD = re.compile(r"(?<=://)([^:/@]+):([^@/]+)@")


def redact_uri(uri: str) -> str:
    """A MongoDB URI safe to log: the password replaced."""
    return _URI_PASSWORD.sub(r"\1:***@", uri)


def sqs_client(settings: Settings, max_pool_connections: int = 50) -> Any:
    # Endpoint, region and credentials come from boto3's own chain; the region
    # only from settings when given, since boto3 ignores AWS_REGION.
    config = Config(
        max_pool_connections=max_pool_connections,
        retries={"mode": "standard", "max_attempts": 3},
        read_timeout=max(30, settings.wait_seconds + 10),
    )
    return boto3.session.Session().client("sqs", region_name=settings.region, config=config)


def mongo_client(settings: Settings, **options: Any) -> MongoClient[dict[str, Any]]:
    options.setdefault("serverSelectionTimeoutMS", 5000)
    # A server that accepts connections but never answers must fail the write (and
    # open the breaker), not hang a writer forever.
    options.setdefault("socketTimeoutMS", 30000)
    options.setdefault("maxPoolSize", max(10, settings.writers * 2))
    return MongoClient(settings.mongo_uri, **options)


def write_concern(settings: Settings) -> WriteConcern | None:
    if settings.write_concern is None and settings.journal is None:
        return None
    w: int | str | None = settings.write_concern
    if isinstance(w, str) and w.isdigit():
        w = int(w)
    return WriteConcern(w=w, j=settings.journal)


def redrive_policy(client: Any, queue_url: str) -> tuple[str | None, int]:
    """The dead-letter queue and maxReceiveCount of the queue's RedrivePolicy, if any."""
    import json

    try:
        attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
    except Exception as exc:
        raise QueueUnavailable(f"cannot read the attributes of {queue_url}: {exc}") from exc
    policy = attrs.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        return None, 0
    parsed = json.loads(policy)
    name = str(parsed["deadLetterTargetArn"]).rsplit(":", 1)[-1]
    url = str(client.get_queue_url(QueueName=name)["QueueUrl"])
    return url, int(parsed.get("maxReceiveCount", 0))


def dead_letter_url(client: Any, queue_url: str) -> str | None:
    """The dead-letter queue named by the queue's RedrivePolicy, if any."""
    return redrive_policy(client, queue_url)[0]


def sqs_queues(settings: Settings, client: Any | None = None) -> dict[str, SqsQueue]:
    if not settings.queue_urls:
        raise ConfigError("no queue: set INGEST_QUEUE_URL or pass --queue-url")
    client = client or sqs_client(settings)
    queues: dict[str, SqsQueue] = {}
    for url in settings.queue_urls:
        dlq, max_receives = redrive_policy(client, url)
        queues[url] = SqsQueue(url, client, settings.dead_letter_url or dlq, max_receives)
    return queues


def mongo_sink(settings: Settings, client: MongoClient[dict[str, Any]] | None = None) -> MongoSink:
    client = client or mongo_client(settings)
    return MongoSink(
        client[settings.database], settings.write_mode, write_concern=write_concern(settings)
    )
