"""`bash scripts/stack.sh status` (what `make stack-status` runs) on the running stack:
it says how many messages the local SQS holds over all queues and the heap ElasticMQ
runs with, and leaves everything running."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BACKLOG = re.compile(
    r"^sqs: +backlog (\d+) messages \((\d+) visible, (\d+) in flight\) in (\d+) queues; "
    r"heap (-Xmx(\d+)([mMgGkK]?)|unknown)"
)


def status() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/stack.sh", "status"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip


def test_status_counts_the_backlog_over_all_queues(make_queue: Any, sqs_client: Any) -> None:
    queue = make_queue(visibility_timeout=120)
    for n in range(5):
        sqs_client.send_message(QueueUrl=queue.url, MessageBody=f"m{n}")
    held = sqs_client.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=2, WaitTimeSeconds=1)
    in_flight = len(held.get("Messages", []))
    assert in_flight >= 1

    done = status()
    assert done.returncode == 0, done.stderr
    lines = [m for line in done.stdout.splitlines() if (m := BACKLOG.match(line))]
    assert len(lines) == 1, done.stdout
    total, visible, flying, queues = (int(lines[0].group(i)) for i in range(1, 5))
    # Other tests' queues count too: at least ours, and the sum adds up.
    assert total == visible + flying
    assert total >= 5 and flying >= in_flight and queues >= 2
    line = lines[0].group(0)
    if "ours, ElasticMQ" in done.stdout:  # started from this checkout: its pid is known
        assert lines[0].group(6), f"no heap for our own ElasticMQ: {line}"
    if lines[0].group(6):
        unit = {"g": 1024, "m": 1, "k": 1 / 1024, "": 1 / 1024 / 1024}[lines[0].group(7).lower()]
        assert int(lines[0].group(6)) * unit >= 512, line

    # It stopped nothing: the queue still answers with every message.
    attrs = sqs_client.get_queue_attributes(
        QueueUrl=queue.url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert sum(int(v) for v in attrs.values()) == 5
