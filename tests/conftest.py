"""Shared fixtures. Integration fixtures talk to the real local stack
(`make stack-up`: ElasticMQ and FerretDB) or to whatever the environment names
(AWS_ENDPOINT_URL_SQS, INGEST_MONGO_URI); `make test` exports both."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from tests.support.queues import QueuePair, bucket_keys

#: The fixtures that reach a server of the local stack: a test using one needs it.
STACK_FIXTURES = frozenset(
    {"sqs_client", "make_queue", "s3_client", "payload_bucket", "mongo_uri", "mongo_db"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks `stack` every test that uses a server of the local stack (by its fixtures,
    or by its own `stack` mark): `-m "not stack"` runs all the others."""
    for item in items:
        if STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


def _require_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests through `make test` (it starts the stack)")
    return value


@pytest.fixture(scope="session")
def sqs_client() -> Any:
    _require_env("AWS_ENDPOINT_URL_SQS")
    return boto3.client("sqs", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


@pytest.fixture
def make_queue(sqs_client: Any) -> Iterator[Callable[..., QueuePair]]:
    """Creates a fresh queue with its dead-letter queue; deletes both afterwards."""
    created: list[str] = []

    def make(
        *, visibility_timeout: int = 30, max_receive_count: int = 5, fifo: bool = False
    ) -> QueuePair:
        name = f"t-{uuid.uuid4().hex[:12]}"
        suffix = ".fifo" if fifo else ""
        fifo_attrs = {"FifoQueue": "true"} if fifo else {}
        dlq = sqs_client.create_queue(QueueName=f"{name}-dlq{suffix}", Attributes=fifo_attrs)[
            "QueueUrl"
        ]
        dlq_arn = sqs_client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attrs = {
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": (
                f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receive_count}"}}'
            ),
            **fifo_attrs,
        }
        url = sqs_client.create_queue(QueueName=f"{name}{suffix}", Attributes=attrs)["QueueUrl"]
        created.extend([url, dlq])
        return QueuePair(url=url, dead_letter_url=dlq, name=name + suffix)

    yield make
    for url in created:
        with contextlib.suppress(Exception):
            sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture(scope="session")
def s3_client() -> Any:
    _require_env("AWS_ENDPOINT_URL_S3")
    return boto3.client("s3", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


@pytest.fixture
def payload_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named S3 bucket; emptied and deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    with contextlib.suppress(Exception):
        for key in bucket_keys(s3_client, name):
            s3_client.delete_object(Bucket=name, Key=key)
        s3_client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def mongo_uri() -> str:
    return _require_env("INGEST_MONGO_URI")


@pytest.fixture
def mongo_db(mongo_uri: str) -> Iterator[Any]:
    """A fresh, uniquely named database, dropped afterwards."""
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    db = client[f"t_{uuid.uuid4().hex[:10]}"]
    yield db
    client.drop_database(db.name)
    client.close()


# Property tests run the same examples every time (a failure replays), except in
# `make reliability`, which explores new ones.
from hypothesis import settings as _hypothesis  # noqa: E402

_hypothesis.register_profile("replayable", derandomize=True)
if os.environ.get("RELIABILITY_FULL", "") in ("", "0"):
    _hypothesis.load_profile("replayable")
