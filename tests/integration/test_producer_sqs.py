"""The producer against the real local ElasticMQ: delivery in every encoding,
the journal when SQS is unreachable, and recovery after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from producer import Producer, wire
from tests.support import ROOT
from tests.support.queues import drain_queue, received_records
from tests.support.servers import free_port as unused_port
from tests.support.waiting import wait_until


def unreachable_client() -> Any:
    """An SQS client whose endpoint refuses connections: SQS is 'down' for it
    only, while the shared ElasticMQ keeps running for everyone else."""
    return boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{unused_port()}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )


class RecordingClient:
    """The real client, noting the order in which record lines were handed to SQS
    (a standard queue does not promise to deliver in that order)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sent: list[int] = []

    def send_message_batch(self, **kwargs: Any) -> Any:
        response = self.client.send_message_batch(**kwargs)
        done = {entry["Id"] for entry in response.get("Successful", ())}
        for entry in kwargs["Entries"]:
            if entry["Id"] in done:
                for record in wire.decode_message(entry["MessageBody"], entry["MessageAttributes"]):
                    assert isinstance(record, wire.Record)
                    self.sent.append(record.document["n"])
        return response


@pytest.mark.parametrize("compression", wire.ENCODINGS)
def test_records_arrive_decodable(
    sqs_client: Any, make_queue: Callable[..., Any], tmp_path: Path, compression: str
) -> None:
    queue = make_queue()
    with Producer(
        queue.url, sqs_client=sqs_client, journal_dir=tmp_path, compression=compression
    ) as producer:
        ids = [producer.send("events", {"n": n, "text": f"record {n} " * 20}) for n in range(1500)]
        assert producer.flush(30)
        stats = producer.stats()
    assert stats.sent == 1500 and stats.journaled == 0 and stats.failed == 0
    records = received_records(sqs_client, queue.url)
    assert sorted(r.document["n"] for r in records) == list(range(1500))
    assert {r.document["_id"] for r in records} == set(ids)
    assert all(r.collection == "events" for r in records)


def test_fifo_queue_gets_groups_and_deduplication(
    sqs_client: Any, make_queue: Callable[..., Any], tmp_path: Path
) -> None:
    queue = make_queue(fifo=True)
    with Producer(queue.url, sqs_client=sqs_client, journal_dir=tmp_path) as producer:
        for n in range(60):
            producer.send("events", {"n": n}, partition_key=f"user-{n % 3}")
        assert producer.flush(30)
    messages = drain_queue(sqs_client, queue.url)
    by_group: dict[str, list[int]] = {}
    for message in messages:
        group = message["Attributes"]["MessageGroupId"]
        for record in wire.decode_message(message["Body"], message["MessageAttributes"]):
            assert isinstance(record, wire.Record)
            by_group.setdefault(group, []).append(record.document["n"])
    assert by_group == {f"user-{k}": list(range(k, 60, 3)) for k in range(3)}


def _replayed_in_order(sqs_client: Any, url: str, journal: Path, expected: int) -> list[int]:
    """A new producer on `journal` replays it as it starts (not only at close); returns
    the numbers it sent, in the order it sent them."""
    recording = RecordingClient(sqs_client)
    with Producer(url, sqs_client=recording, journal_dir=journal) as producer:
        wait_until(lambda: producer.stats().replayed >= expected, 60, 0.05)
        assert producer.stats().replayed == expected
    return recording.sent


def test_unreachable_sqs_then_replay_delivers_every_record_once_in_order(
    sqs_client: Any, make_queue: Callable[..., Any], tmp_path: Path
) -> None:
    queue = make_queue()
    with Producer(
        queue.url, sqs_client=unreachable_client(), journal_dir=tmp_path, probe_seconds=3600
    ) as down:
        for n in range(2000):
            down.send("events", {"n": n})
            if n % 500 == 499:
                assert down.flush(30)
        assert down.stats().journaled == 2000
    assert list(tmp_path.glob("*.seg"))
    assert _replayed_in_order(sqs_client, queue.url, tmp_path, 2000) == list(range(2000))
    assert not list(tmp_path.glob("*.seg"))
    received = [r.document["n"] for r in received_records(sqs_client, queue.url)]
    assert sorted(received) == list(range(2000))  # each exactly once


CRASHING_APP = textwrap.dedent(
    """
    import os, sys, time
    import boto3
    from botocore.config import Config
    from producer import Producer

    url, journal_dir, port = sys.argv[1], sys.argv[2], sys.argv[3]
    client = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}",
                          config=Config(retries={"total_max_attempts": 1}))
    producer = Producer(url, sqs_client=client, journal_dir=journal_dir, probe_seconds=3600)
    for n in range(1000):
        producer.send("events", {"n": n})
    assert producer.flush(30)
    assert producer.stats().journaled == 1000, producer.stats()
    print("journaled", flush=True)
    time.sleep(60)  # killed here, never closing the producer (the parent SIGKILLs it)
    """
)


def test_journal_left_by_a_sigkilled_process_is_replayed_at_start(
    sqs_client: Any, make_queue: Callable[..., Any], tmp_path: Path
) -> None:
    queue = make_queue()
    journal = tmp_path / "journal"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    app = subprocess.Popen(
        [sys.executable, "-c", CRASHING_APP, queue.url, str(journal), str(unused_port())],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "journaled"
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait(10)
    assert app.returncode == -signal.SIGKILL
    assert _replayed_in_order(sqs_client, queue.url, journal, 1000) == list(range(1000))
    received = [r.document["n"] for r in received_records(sqs_client, queue.url)]
    assert sorted(received) == list(range(1000))
