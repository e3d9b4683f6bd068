"""The documented Flask and FastAPI examples work: a request returns while SQS hangs
(SQS is called from the producer's sender thread only), and its record reaches SQS
after a flush. (How fast send() returns is measured by bench/bench_producer.py.)"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from types import ModuleType

import pytest

from producer import AsyncProducer, Producer
from producer.testing import AsyncRecordingProducer, RecordingProducer
from tests.support.watched_sqs import SENDER_THREAD, WatchedSQS

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
URL = "http://sqs.local/000000000000/q"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(60)
def test_flask_example(tmp_path: Path) -> None:
    fake = WatchedSQS()
    fake.gate = threading.Event()  # SQS hangs until released
    producer = Producer(URL, sqs_client=fake, journal_dir=tmp_path)
    try:
        client = load("flask_app").create_app(producer).test_client()
        response = client.post("/operations", json={"user_id": 7, "action": "login"})
        assert response.status_code == 202 and not fake.gate.is_set()  # answered while SQS hangs
        record_id = response.get_json()["id"]
        fake.gate.set()
        assert producer.flush(5)
        [record] = fake.records()
        assert str(record.document["_id"]) == record_id
        assert (record.collection, record.document["action"]) == ("operations", "login")
        assert fake.callers == {SENDER_THREAD}  # never the request's thread
    finally:
        fake.gate.set()
        producer.close()


@pytest.mark.timeout(60)
def test_fastapi_example(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    fake = WatchedSQS()
    fake.gate = threading.Event()
    producer = AsyncProducer(URL, sqs_client=fake, journal_dir=tmp_path)
    try:
        with TestClient(load("fastapi_app").create_app(producer)) as client:
            response = client.post("/operations", json={"user_id": 7, "action": "logout"})
            assert response.status_code == 202 and not fake.gate.is_set()
            record_id = response.json()["id"]
            assert producer.stats().sent == 0
            fake.gate.set()
            assert producer.producer.flush(5)
        # The lifespan closed the producer on shutdown.
        assert producer.producer.closed
        [record] = fake.records()
        assert str(record.document["_id"]) == record_id
        assert record.document["action"] == "logout"
        assert fake.callers == {SENDER_THREAD}  # never the event loop's thread
    finally:
        fake.gate.set()


def test_flask_example_tested_with_the_recording_producer(
    recording_producer: RecordingProducer,
) -> None:
    """What a web developer writes: no SQS, no threads; assert on what was sent."""
    client = load("flask_app").create_app(recording_producer).test_client()  # type: ignore[arg-type]
    response = client.post("/operations", json={"user_id": 7, "action": "login"})
    assert response.status_code == 202
    [sent] = recording_producer.sent
    assert str(sent.record_id) == response.get_json()["id"]
    assert (sent.collection, sent.document["user_id"], sent.document["action"]) == (
        "operations", "7", "login",
    )  # fmt: skip


def test_fastapi_example_tested_with_the_recording_producer() -> None:
    from fastapi.testclient import TestClient

    producer = AsyncRecordingProducer()
    with TestClient(load("fastapi_app").create_app(producer)) as client:  # type: ignore[arg-type]
        response = client.post("/operations", json={"user_id": 8, "action": "logout"})
        assert response.status_code == 202
    assert producer.closed  # the lifespan closed it
    assert producer.documents("operations")[0]["action"] == "logout"
