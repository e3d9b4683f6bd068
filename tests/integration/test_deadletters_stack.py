"""Dead-letter tools on the real servers: a consumer run dead-letters poison with
reasons, SQS moves over-received messages; show lists them without consuming,
redrive (manual with a filter, SQS's move task for all, and the fallback when
the move task is refused) sends them back, and the redriven good ones are written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ingest.errors import QueueRefused
from ingest.queues.base import NO_REASON
from ingest.queues.sqs import SqsQueue, SqsService
from ingest.tools import deadletters
from producer import wire

INGEST = str(Path(sys.executable).parent / "ingest")


def _cli(
    *args: str, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INGEST, *args], env=env, capture_output=True, text=True, input=input,
                          timeout=300)  # fmt: skip


def _send(
    client: Any, url: str, records: list[tuple[str, dict[str, Any]]], encoding: str = "identity"
) -> None:
    body = wire.join_lines(wire.encode_record(c, d) for c, d in records)
    attributes = wire.message_attributes(encoding, len(records))
    client.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)


def _depth(client: Any, url: str) -> int:
    return SqsQueue(url, client).depth().total


def _drain(url: str, env: dict[str, str]) -> None:
    done = _cli("run", "--queue-url", url, "--exit-when-idle", "1", "--wait-seconds", "1",
                "--metrics-port", "0", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_show_redrive_and_purge(sqs_client: Any, make_queue: Any, mongo_db: Any) -> None:
    queue = make_queue(max_receive_count=1)
    env = dict(os.environ, INGEST_DATABASE=mongo_db.name, INGEST_QUEUE_URL=queue.url)
    # Three good messages that SQS itself moves to the DLQ: received twice, never deleted
    # (what happens to messages while every consumer fails to write them).
    for n in range(3):
        _send(sqs_client, queue.url, [("ops", {"_id": f"late-{n}", "n": n})])
    for _ in range(3):
        sqs_client.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    assert _depth(sqs_client, queue.dead_letter_url) == 3
    # Poison the consumer dead-letters with a reason, beside a good record.
    _send(sqs_client, queue.url, [("ops", {"_id": "good"}), ("bad$name", {"_id": "x"})])
    sqs_client.send_message(QueueUrl=queue.url, MessageBody="AAAA",
                            MessageAttributes=wire.message_attributes("identity", 1)
                            | {wire.ENCODING_ATTRIBUTE: {"DataType": "String", "StringValue": "brotli"}})  # fmt: skip
    _drain(queue.url, env)
    assert mongo_db.ops.count_documents({}) == 1

    shown = _cli("dlq", "show", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    counts = {group["reason"]: group["count"] for group in summary["reasons"]}
    assert summary["total"] == 5
    assert counts == {
        NO_REASON: 3,
        "line 2: collection name 'bad$name' must not contain '$' or NUL": 1,
        "unknown encoding 'brotli'": 1,
    }
    assert _depth(sqs_client, queue.dead_letter_url) == 5  # nothing consumed
    text = _cli("dlq", "show", env=env).stdout
    assert text.startswith("5 dead-lettered messages") and "samples of:" in text

    moved = json.loads(_cli("dlq", "redrive", "--reason", "maxReceiveCount", env=env).stdout)
    assert (moved["method"], moved["moved"], moved["kept"]) == ("receive-send-delete", 3, 2)
    _drain(queue.url, env)
    assert sorted(d["_id"] for d in mongo_db.ops.find()) == ["good", "late-0", "late-1", "late-2"]

    regex = json.loads(_cli("dlq", "redrive", "--reason-regex", "brot+li", env=env).stdout)
    assert (regex["moved"], regex["kept"]) == (1, 1)
    (back,) = sqs_client.receive_message(QueueUrl=queue.url, MessageAttributeNames=["All"],
                                         WaitTimeSeconds=1)["Messages"]  # fmt: skip
    assert back["MessageAttributes"][wire.ENCODING_ATTRIBUTE]["StringValue"] == "brotli"
    assert not {"ingest-dead-letter-reason", "ingest-source-queue"} & set(back["MessageAttributes"])
    sqs_client.delete_message(QueueUrl=queue.url, ReceiptHandle=back["ReceiptHandle"])

    everything = json.loads(_cli("dlq", "redrive", env=env).stdout)
    assert (everything["method"], everything["moved"]) == ("move-task", 1)
    assert _depth(sqs_client, queue.url) == 1 and _depth(sqs_client, queue.dead_letter_url) == 0
    _drain(queue.url, env)  # the poison comes back to the dead-letter queue, reason and all
    assert _depth(sqs_client, queue.dead_letter_url) == 1

    refused = _cli("dlq", "purge", env=env, input="n\n")
    assert refused.returncode == 1 and _depth(sqs_client, queue.dead_letter_url) == 1
    purged = _cli("dlq", "purge", "--yes", env=env)
    assert json.loads(purged.stdout)["purged"] == 1
    assert _depth(sqs_client, queue.dead_letter_url) == 0


def test_redrive_all_falls_back_when_the_move_task_is_refused(
    sqs_client: Any, make_queue: Any
) -> None:
    import boto3

    queue = make_queue()
    client = boto3.client("sqs", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))

    def refuse(**kwargs: Any) -> None:
        # What an endpoint without the API answers (older ElasticMQ, some emulators).
        raise ClientError({"Error": {"Code": "UnsupportedOperation", "Message": "no"}},
                          "StartMessageMoveTask")  # fmt: skip

    client.meta.events.register("before-call.sqs.StartMessageMoveTask", refuse)
    for n in range(12):
        sqs_client.send_message(QueueUrl=queue.dead_letter_url, MessageBody=f"m{n}")
    service = SqsService(client)
    source, dead = service.queue(queue.url), service.queue(queue.dead_letter_url)
    result = deadletters.redrive(service, dead, source)
    assert (result.method, result.moved, result.kept) == ("receive-send-delete", 12, 0)
    assert "UnsupportedOperation" in result.notes[0]
    assert _depth(sqs_client, queue.url) == 12 and _depth(sqs_client, queue.dead_letter_url) == 0
    with pytest.raises(QueueRefused, match="UnsupportedOperation"):
        deadletters.redrive(service, dead, source, method="move-task")
