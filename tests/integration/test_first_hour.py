"""A user's first hour, the steps that need the local stack: the installed `ingest`
command as a user runs it, with the stack's SQS and MongoDB, and a TCP proxy in front
of one of them to take it away and bring it back (the shared servers are never
stopped). Each checks the exit code, the lines printed and that no traceback shows;
timeouts are hang guards, how fast is for bench/."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from producer import wire
from producer.journal import Journal
from tests.support.metrics import scrape
from tests.support.queues import drain_queue
from tests.support.tcpproxy import TcpProxy
from tests.support.user_steps import INGEST, clean_env, ingest, probe
from tests.support.waiting import wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stack_env(home: Path, **extra: str) -> dict[str, str]:
    """The stack's endpoints and local credentials, nothing else from outside."""
    names = ("AWS_ENDPOINT_URL_SQS", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "INGEST_MONGO_URI")  # fmt: skip
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: run the tests through `make test`")
    return clean_env(home, {**{name: os.environ[name] for name in names}, **extra})


def _wait_for(predicate: Any, seconds: float, what: str) -> None:
    assert wait_until(predicate, seconds, 0.2), f"{what} within {seconds:.0f}s"


def _depths(sqs_client: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages in a queue, as SQS counts them."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(found[names[0]]), int(found[names[1]])


# ----------------------------------------------------------- MongoDB unreachable


def test_run_with_the_database_unreachable_says_so_once_retries_and_resumes(
    make_queue: Any, mongo_db: Any, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue()
    mongo = urlsplit(os.environ["INGEST_MONGO_URI"])
    metrics_port = _free_port()
    with TcpProxy(mongo.hostname or "127.0.0.1", mongo.port or 27017) as proxy:
        proxy.refuse()  # MongoDB is away when the consumer starts
        env = _stack_env(tmp_path, INGEST_QUEUE_URL=queue.url, INGEST_DATABASE=mongo_db.name,
                         INGEST_MONGO_URI=f"mongodb://127.0.0.1:{proxy.port}/")  # fmt: skip
        consumer = subprocess.Popen(
            [INGEST, "run", "--wait-seconds", "1", "--metrics-port", str(metrics_port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            _wait_for(lambda: "mongodb" in probe(metrics_port, "/readyz", timeout=2)[1].get("checks", {}),
                      30, "/readyz answers past starting")  # fmt: skip
            # /readyz answers from kept state, whatever MongoDB does (the 2 s timeout is a
            # hang guard; how fast it answers is measured by `python -m bench.probes`).
            answers = [probe(metrics_port, "/readyz", timeout=2) for _ in range(20)]
            assert all(status == 503 for status, _, _ in answers)
            assert f"MongoDB at 127.0.0.1:{proxy.port}" in answers[0][1]["checks"]["mongodb"]
            assert probe(metrics_port, "/healthz", timeout=2)[0] == 200  # paused on purpose: alive
            # A record waits in SQS meanwhile; nothing is received, nothing dead-lettered.
            body = wire.encode_record("events", {"_id": "first-hour", "n": 1})
            sqs_client.send_message(QueueUrl=queue.url, MessageBody=body,
                                    MessageAttributes=wire.message_attributes(wire.IDENTITY, 1))  # fmt: skip
            # Until the consumer's own depth report (every 10 s) shows the record waiting:
            # it has looked at the queue since, with its pollers going round all along.
            seen: dict[str, float] = {}

            def reported_waiting() -> bool:
                nonlocal seen
                seen = scrape(metrics_port)
                return seen.get(f'ingest_queue_visible_messages{{queue="{queue.url}"}}', 0) >= 1

            _wait_for(reported_waiting, 30, "the consumer's depth report shows the record")
            assert seen["ingest_messages_received_total"] == 0, seen  # nothing received
            assert seen[f'ingest_dead_letter_messages{{queue="{queue.url}"}}'] == 0, seen
            assert _depths(sqs_client, queue.url) == (1, 0)  # visible, none taken
            assert _depths(sqs_client, queue.dead_letter_url) == (0, 0)  # nothing dead-lettered
            proxy.passthrough()
            _wait_for(
                lambda: probe(metrics_port, "/readyz", timeout=2)[0] == 200, 45, "ready again"
            )
            _wait_for(lambda: mongo_db.events.count_documents({}) == 1, 30, "the record written")
        finally:
            consumer.send_signal(signal.SIGTERM)
            _, stderr = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, stderr
    assert "Traceback" not in stderr and "maximum number of running instances" not in stderr
    down = [line for line in stderr.splitlines() if "does not answer" in line]
    assert len(down) == 1, stderr  # said once, not at every probe
    assert re.search(rf"MongoDB at 127\.0\.0\.1:{proxy.port} does not answer: .*"
                     r"(reset|refused|closed)", down[0], re.IGNORECASE), down  # fmt: skip
    assert "probing every 1-30s" in down[0]
    warnings = [line for line in stderr.splitlines() if " WARNING " in line]
    assert any("MongoDB answers again" in line for line in warnings)
    # Down once, answers again once; beside them only the replica heartbeat's (one a
    # heartbeat, as many as the outage lasted heartbeats): nothing at every probe.
    others = [line for line in warnings if line != down[0] and "answers again" not in line]
    assert all("replica heartbeat failed" in line for line in others), stderr
    assert sum("answers again" in line for line in warnings) == 1, stderr


# ------------------------------------------------------------- backfill, SQS away


def _records_in(sqs_client: Any, url: str) -> set[int]:
    numbers: set[int] = set()
    for message in drain_queue(sqs_client, url):
        for item in wire.decode_message(message["Body"], message.get("MessageAttributes")):
            assert isinstance(item, wire.Record)
            numbers.add(int(item.document["i"]))
    return numbers


@pytest.mark.timeout(400)
def test_backfill_ctrl_c_with_the_queue_gone_ends_in_seconds_and_resumes(
    make_queue: Any, sqs_client: Any, tmp_path: Path
) -> None:
    lines = 12_000
    queue = make_queue()
    source = tmp_path / "ops.jsonl"
    source.write_text("".join(json.dumps({"i": i, "pad": "x" * 40}) + "\n" for i in range(lines)))
    checkpoint = tmp_path / "cp.json"
    journal = tmp_path / "cp.journal"
    sqs = urlsplit(os.environ["AWS_ENDPOINT_URL_SQS"])
    with TcpProxy(sqs.hostname or "127.0.0.1", sqs.port or 9324) as proxy:
        endpoint = f"http://127.0.0.1:{proxy.port}"
        url = endpoint + urlsplit(queue.url).path  # the same queue, through the proxy
        env = _stack_env(tmp_path, AWS_ENDPOINT_URL_SQS=endpoint)
        step = [INGEST, "backfill", str(source), "--queue-url", url, "--collection", "ops",
                "--checkpoint", str(checkpoint), "--checkpoint-every", "1000",
                "--rate", "1500"]  # fmt: skip
        run = subprocess.Popen(step, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
        _wait_for(checkpoint.exists, 30, "a first checkpoint")
        proxy.refuse()  # SQS goes away mid-run
        time.sleep(3)  # the fault's duration before the Ctrl-C: the backfill runs into it
        run.send_signal(signal.SIGINT)
        # Ends by itself: the timeout is a hang guard (how long the producer's close
        # takes against an SQS that does not answer is measured by `python -m bench.probes`).
        out, err = run.communicate(timeout=60)
        assert run.returncode == 130, err
        assert "Traceback" not in err
        last = err.strip().splitlines()[-1]
        held = Journal(journal).pending_records()
        assert held > 0
        assert last == (
            f"ingest: stopped early; {held} records SQS did not take are journaled in "
            f"{journal} (the next run with this checkpoint sends them first); run the same "
            f"command again to resume ({checkpoint})"
        ), err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["interrupted"] is True

        proxy.passthrough()  # SQS is back: the same command finishes the job
        resumed = ingest(*step[1:], env=env, cwd=tmp_path, timeout=300)
        assert resumed.code == 0, resumed
        assert Journal(journal).pending_records() == 0
    assert _records_in(sqs_client, queue.url) == set(range(lines))  # nothing lost


# ----------------------------------------------------------------- ingest check


def test_check_passes_on_a_good_setup_and_fails_without_a_redrive_policy(
    make_queue: Any, mongo_db: Any, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue()
    env = _stack_env(tmp_path, INGEST_DATABASE=mongo_db.name)
    good = ingest("check", "--queue-url", queue.url, env=env, timeout=60)  # a hang guard
    assert good.code == 0 and good.stderr == "", good
    assert [line.split(": ", 1)[0] for line in good.stdout.splitlines()] == [
        "ok    settings",
        f"ok    queue {queue.url}",
        f"ok    dead-letter queue of {queue.url}",
        "ok    mongodb",
        "ok    mongodb write",
    ]
    assert f"{queue.dead_letter_url}, after 5 receives" in good.stdout

    bare = sqs_client.create_queue(QueueName=f"{queue.name}-bare")["QueueUrl"]
    try:
        without = ingest("check", "--queue-url", bare, env=env)
    finally:
        sqs_client.delete_queue(QueueUrl=bare)
    without.expect(1, "1 of 5 checks failed", within=20)
    failed = [line for line in without.stdout.splitlines() if line.startswith("FAIL")]
    assert failed == [
        f"FAIL  dead-letter queue of {bare}: no redrive policy: bad input would be retried "
        "until it expires (run `ingest init`, or pass --dead-letter-url)"
    ]


def test_backfill_with_a_journal_it_cannot_write_is_one_line(
    make_queue: Any, tmp_path: Path
) -> None:
    queue = make_queue()
    source = tmp_path / "ops.jsonl"
    source.write_text('{"a": 1}\n')
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    outcome = ingest("backfill", str(source), "--queue-url", queue.url, "--collection", "ops",
                     "--checkpoint", str(blocker / "cp.json"), env=_stack_env(tmp_path))  # fmt: skip
    outcome.expect(2, f"backfill: journal_dir '{blocker}/cp.journal' cannot be written",
                   "beside --checkpoint", within=20)  # fmt: skip
