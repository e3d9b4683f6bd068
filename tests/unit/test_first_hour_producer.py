"""The producer in a web app's first hour: what Producer() refuses at construction,
and how long close() takes when SQS never answers (a web server's graceful stop)."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import pytest

from producer import ConfigError, Producer, ProducerError
from producer.journal import Journal
from tests.support.tcpproxy import SilentServer

URL = "http://sqs.local/000000000000/q"
DOCS = Path(__file__).parents[2] / "docs" / "producer.md"


@pytest.mark.parametrize(
    "url",
    ["not a url", "sqs.local/000000000000/q", "http://sqs.local", ""],
    ids=["words", "no-scheme", "no-queue-path", "empty"],  # not "sqs": make test-unit skips it
)
def test_a_queue_url_that_is_not_one_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ProducerError) as raised:
        Producer(url, journal_dir=tmp_path)
    assert isinstance(raised.value, ConfigError) and isinstance(raised.value, ValueError)
    assert "queue_url" in str(raised.value)
    if url:
        assert repr(url) in str(raised.value) and "https://sqs.<region>" in str(raised.value)


def test_a_journal_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"journal_dir '.*a-file/journal' cannot be written"):
        Producer(URL, journal_dir=blocker / "journal")


def test_a_journal_dir_that_exists_but_cannot_be_written_is_refused() -> None:
    # /proc exists and takes no new files, even for root (chmod does not stop root).
    with pytest.raises(ConfigError, match="journal_dir '/proc' cannot be written"):
        Producer(URL, journal_dir="/proc")


def test_a_writable_journal_dir_is_created(tmp_path: Path) -> None:
    producer = Producer(URL, journal_dir=tmp_path / "new" / "journal")
    producer.close()
    assert (tmp_path / "new" / "journal").is_dir()


def test_close_defaults_to_ten_seconds_and_docs_say_so() -> None:
    assert inspect.signature(Producer.close).parameters["timeout"].default == 10.0
    assert "`close(timeout=10.0)`" in DOCS.read_text()


def test_close_with_an_endpoint_that_never_answers_ends_within_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SilentServer() as silent:
        for name, value in {
            "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{silent.port}",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
        }.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        url = f"http://127.0.0.1:{silent.port}/000000000000/q"
        producer = Producer(url, journal_dir=tmp_path / "journal")
        for n in range(5):
            producer.send("events", {"n": n})
        deadline = time.monotonic() + 5
        while not silent.connections and time.monotonic() < deadline:
            time.sleep(0.05)  # the sender thread is now waiting for an answer
        assert silent.connections
        started = time.monotonic()
        producer.close()
        took = time.monotonic() - started
    # Well inside gunicorn's 30 s graceful timeout; nothing lost: all five journaled.
    assert 9.0 <= took <= 14.0, took
    assert Journal(tmp_path / "journal").pending_records() == 5
