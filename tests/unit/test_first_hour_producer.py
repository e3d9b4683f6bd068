"""The producer in a web app's first hour: what Producer() refuses at construction,
and close() when SQS never answers (a web server's graceful stop)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from producer import ConfigError, Producer, ProducerError
from producer.journal import Journal
from tests.support.tcpproxy import SilentServer
from tests.support.waiting import wait_until

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


@pytest.mark.timeout(60)  # a close() that waited on the endpoint would hang here
def test_close_with_an_endpoint_that_never_answers_returns_and_journals_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web server's graceful stop: close() gives up on an endpoint that never answers
    at its timeout (10 s by default, above; a short one here) and loses nothing.
    (How long it takes against its timeout is measured by `python -m bench.probes`.)"""
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
        # The sender thread is now waiting for an answer that never comes.
        assert wait_until(lambda: silent.connections > 0)
        producer.close(timeout=0.5)
        assert producer.closed and silent.connections > 0
    # Nothing lost: all five journaled, for the next producer with this journal_dir.
    assert Journal(tmp_path / "journal").pending_records() == 5
