"""Backfill through the real Producer into moto's SQS: resume, dedupe, dry run, bad lines."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import bson
import pytest
from moto import mock_aws

from ingest.errors import BackfillError
from ingest.tools.backfill import Backfill, Options
from producer import Producer
from producer.wire import Record, decode_message


@pytest.fixture
def sqs() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        yield client, client.create_queue(QueueName="bf")["QueueUrl"]


class StopAfter:
    """The real producer, with the stop event set after `count` sends (a Ctrl-C)."""

    def __init__(self, producer: Producer, stop: threading.Event, count: int) -> None:
        self.producer, self.stop, self.left = producer, stop, count

    def send(self, collection: str, document: dict[str, Any]) -> Any:
        self.left -= 1
        if self.left == 0:
            self.stop.set()
        return self.producer.send(collection, document)

    def flush(self, timeout: float | None = None) -> bool:
        return self.producer.flush(timeout)

    def stats(self) -> Any:
        return self.producer.stats()

    def close(self, timeout: float | None = 30.0) -> None:
        self.producer.close(timeout)


def _ids_in_queue(client: Any, url: str) -> list[str]:
    ids = []
    receive = {"QueueUrl": url, "MaxNumberOfMessages": 10, "MessageAttributeNames": ["All"]}
    while got := client.receive_message(**receive).get("Messages"):
        for message in got:
            records = decode_message(message["Body"], message.get("MessageAttributes"))
            ids += [str(r.document["_id"]) for r in records if isinstance(r, Record)]
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return ids


def _options(tmp_path: Path, url: str, **extra: Any) -> Options:
    extra.setdefault("path", tmp_path / "in.jsonl")
    return Options(checkpoint=tmp_path / "cp.json", queue_url=url, collection="ops",
                   checkpoint_every=100, progress=False, **extra)  # fmt: skip


def _producer(client: Any, url: str, tmp_path: Path) -> Producer:
    return Producer(url, sqs_client=client, journal_dir=tmp_path / "journal", overflow="block")


def test_interrupted_backfill_resumes_and_reruns_send_the_same_ids(
    sqs: tuple[Any, str], tmp_path: Path
) -> None:
    client, url = sqs
    lines = [json.dumps({"n": i}) for i in range(1000)]
    lines[500] = "{oops"
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    stop = threading.Event()
    producer = _producer(client, url, tmp_path)
    first = Backfill(_options(tmp_path, url), StopAfter(producer, stop, 450), stop).run()
    producer.close()
    assert first.interrupted and first.sent == 450
    saved = json.loads((tmp_path / "cp.json").read_text())
    assert saved["positions"]["in.jsonl"] == 450 and saved["done"] == []

    producer = _producer(client, url, tmp_path)
    second = Backfill(_options(tmp_path, url, bad_lines=tmp_path / "bad.jsonl"), producer).run()
    producer.close()
    assert (second.skipped, second.sent, second.bad_lines) == (450, 549, 1)
    (bad,) = [json.loads(x) for x in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert bad["line"] == 501 and bad["text"] == "{oops"
    ids = _ids_in_queue(client, url)
    assert len(ids) == len(set(ids)) == 999

    (tmp_path / "cp.json").unlink()  # forget everything: the same ids come out again
    producer = _producer(client, url, tmp_path)
    Backfill(_options(tmp_path, url), producer).run()
    producer.close()
    assert sorted(_ids_in_queue(client, url)) == sorted(ids)


def test_dry_run_validates_without_sending_or_checkpointing(
    sqs: tuple[Any, str], tmp_path: Path
) -> None:
    client, url = sqs
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n{"$bad": 1}\n{"_id": [1]}\n')
    messages: list[str] = []
    report = Backfill(_options(tmp_path, url, dry_run=True), None, echo=messages.append).run()
    assert (report.sent, report.bad_lines) == (1, 2)
    assert any("in.jsonl:2" in m and "'$bad'" in m for m in messages)
    assert not (tmp_path / "cp.json").exists()
    assert _ids_in_queue(client, url) == []


def test_a_jsonl_file_without_collection_is_refused(sqs: tuple[Any, str], tmp_path: Path) -> None:
    _, url = sqs
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n')
    options = Options(path=tmp_path / "in.jsonl", checkpoint=tmp_path / "cp", queue_url=url,
                      dry_run=True, progress=False)  # fmt: skip
    with pytest.raises(BackfillError, match="pass --collection"):
        Backfill(options, None).run()


@pytest.mark.parametrize("kind", ["jsonl", "bson"])
def test_a_null_id_is_derived_like_a_missing_one_so_reruns_send_the_same_ids(
    kind: str, sqs: tuple[Any, str], tmp_path: Path
) -> None:
    """Kept, a null _id would be stamped afresh by send() on every run."""
    client, url = sqs
    documents = [{"_id": None, "n": i} for i in range(3)] + [{"_id": "kept", "n": 3}]
    source = tmp_path / f"in.{kind}"
    if kind == "jsonl":
        source.write_text("".join(json.dumps(d) + "\n" for d in documents))
    else:
        source.write_bytes(b"".join(bson.encode(d) for d in documents))
    runs = []
    for _ in range(2):
        (tmp_path / "cp.json").unlink(missing_ok=True)
        producer = _producer(client, url, tmp_path)
        Backfill(_options(tmp_path, url, path=source), producer).run()
        producer.close()
        runs.append(sorted(_ids_in_queue(client, url)))
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 4 and "kept" in runs[0] and "None" not in runs[0]
