"""Credentials never reach the logs or the dead-letter reasons."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

from ingest.logs import configure, redact
from ingest.queues.base import REASON_ATTRIBUTE
from tests.support.harness import (
    Consumer,
    Ledger,
    pack,
    poison_bodies,
    running,
    send_bodies,
    wait_until,
)
from tests.support.queues import drain_queue
from tests.support.tcpproxy import TcpProxy

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
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    """A MongoDB URI with user:password (FerretDB's PLAIN login, which its PostgreSQL
    trusts) through a proxy, a distinctive AWS secret in the environment: poison
    messages dead-lettered while MongoDB answers, then MongoDB cut to make it fail."""
    queue = make_queue(visibility_timeout=5)
    ledger = Ledger("events")
    mongo_port = int(mongo_uri.rstrip("/").rsplit(":", 1)[1])
    with TcpProxy("127.0.0.1", mongo_port) as proxy:
        uri = (
            f"mongodb://postgres:{PASSWORD}@127.0.0.1:{proxy.port}/"
            "?authMechanism=PLAIN&serverSelectionTimeoutMS=1000"
        )
        consumer = Consumer(
            queue.url, uri, mongo_db.name, tmp_path / "c.log", 5,
            extra_args=["--log-format", "text"],
            extra_env={"AWS_SECRET_ACCESS_KEY": AWS_SECRET, "INGEST_LOG_LEVEL": "DEBUG"},
        )  # fmt: skip
        with running([consumer]):
            send_bodies(sqs_client, queue.url, poison_bodies(ledger, 3))
            letters: list[dict[str, Any]] = []

            def three_letters() -> bool:
                letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=1))
                return len(letters) >= 3

            wait_until(three_letters, 30)
            proxy.refuse()  # now MongoDB fails: the records are held back, not dead-lettered
            send_bodies(sqs_client, queue.url, pack(ledger.records(20), 10))
            opened = wait_until(lambda: "pausing the pollers" in consumer.log_text(), 30)
            letters += drain_queue(sqs_client, queue.dead_letter_url, wait=1)
    log = consumer.log_text()
    assert opened and "MongoDB" in log, "the test must provoke MongoDB errors"
    assert sorted(m["Body"] for m in letters) == [
        "poison 0 of events: not JSON",
        "poison 1 of events: not JSON",
        "poison 2 of events: not JSON",
    ]
    reasons = [m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in letters]
    assert reasons == ["not valid JSON: Expecting value at column 1"] * 3
    for secret in (PASSWORD, AWS_SECRET):
        assert secret not in log
        assert secret not in " ".join(reasons)
