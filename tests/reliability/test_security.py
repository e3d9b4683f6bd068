"""Credentials never reach the logs or the dead-letter reasons."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

from ingest.logs import configure, redact
from ingest.queues.base import REASON_ATTRIBUTE
from tests.support.harness import Consumer, Ledger, pack, poison_bodies, running, send_bodies
from tests.support.queues import drain_queue
from tests.support.servers import free_port

PASSWORD = "s3cret-Pa55word"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.mark.parametrize(
    "text",
    [
        f"mongodb://ingest:{PASSWORD}@db.example:27017/?tls=true",
        f"mongodb+srv://ingest:{PASSWORD}@cluster0.example/ingest",
        f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}",
        f"password: {PASSWORD}",
        f"credentials {AWS_KEY_ID} rejected",
    ],
)
def test_redact_removes_secrets(text: str) -> None:
    cleaned = redact(text)
    assert PASSWORD not in cleaned and AWS_SECRET not in cleaned and AWS_KEY_ID not in cleaned


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tracebacks_are_redacted_too(log_format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure(log_format)
    try:
        raise ConnectionError(f"cannot reach mongodb://ingest:{PASSWORD}@db.example/")
    except ConnectionError:
        logging.getLogger("ingest.test").exception("connect failed for %s", AWS_KEY_ID)
    finally:
        logging.getLogger().handlers[:] = []
    out = stream.getvalue()
    assert "connect failed" in out and "ConnectionError" in out
    assert PASSWORD not in out and AWS_KEY_ID not in out


@pytest.mark.stack
def test_consumer_keeps_credentials_out_of_logs_and_dead_letters(
    sqs_client: Any, make_queue: Any, tmp_path: Path
) -> None:
    """A MongoDB URI with user:password that cannot connect, a distinctive AWS
    secret in the environment, and poison messages to dead-letter."""
    queue = make_queue(visibility_timeout=5)
    ledger = Ledger("events")
    send_bodies(sqs_client, queue.url, poison_bodies(ledger, 3) + pack(ledger.records(20), 10))
    uri = f"mongodb://ingest:{PASSWORD}@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=1000"
    consumer = Consumer(
        queue.url, uri, "t_security", tmp_path / "c.log", 5,
        extra_args=["--log-format", "text"],
        extra_env={"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "INGEST_LOG_LEVEL": "DEBUG"},
    )  # fmt: skip
    with running([consumer]):
        letters = []
        for _ in range(20):
            letters += drain_queue(sqs_client, queue.dead_letter_url, wait=1)
            if "sink breaker opened" in consumer.log_text():
                break
    log = consumer.log_text()
    assert "MongoDB" in log, "the test must provoke MongoDB errors"
    # While MongoDB is unreachable the breaker holds everything back, poison included,
    # so letters may be few; the reasons that do exist must be clean.
    reasons = " ".join(m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in letters)
    for secret in (PASSWORD, AWS_SECRET):
        assert secret not in log
        assert secret not in reasons
