"""The journal on a full disk: a 512 KiB filesystem, SQS unreachable, far more records
than fit. Every record ends counted once: journaled (on disk, and delivered once SQS
answers) or failed (lost, and passed to on_error). No traceback reaches the app."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bson
import pytest

from producer import Producer
from producer.journal import Journal, decode_entry
from tests.support import ROOT
from tests.support.queues import received_records
from tests.support.servers import free_port as unused_port
from tests.support.waiting import wait_until

RECORDS = 5000
SMALL_DISK = "512k"

# A web app with logging set up as most are, whose SQS cannot be reached.
APP_ON_A_FULL_DISK = textwrap.dedent(
    """
    import json, logging, sys
    import boto3
    from botocore.config import Config
    from producer import Producer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    url, journal_dir, port, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}",
                          config=Config(retries={"total_max_attempts": 1}))
    lost, reasons = [], set()

    def on_error(records, reason):
        lost.extend(json.loads(line)["d"]["_id"] for line in records)
        reasons.add(reason)

    producer = Producer(url, sqs_client=client, journal_dir=journal_dir, on_error=on_error,
                        probe_seconds=3600)
    for n in range(count):
        producer.send("events", {"_id": f"r-{n}", "text": f"record {n} " * 20})
    producer.close(60)
    print(json.dumps({"stats": producer.stats().as_dict(), "lost": lost,
                      "reasons": sorted(reasons)}))
    """
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB filesystem (tmpfs), mounted for this test."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK},mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(
            f"this test needs a {SMALL_DISK} filesystem and could not mount a tmpfs "
            f"(euid {os.geteuid()}: {done.stderr.strip()}); run it as root, as CI does"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def journal_ids(directory: Path) -> list[str]:
    """The _id of every whole record line in the journal's segments."""
    ids: list[str] = []
    for segment in Journal(directory).segments():
        data = segment.read_bytes()
        assert not data or data.endswith(b"\n"), f"{segment.name} ends with a torn line"
        for line in data.decode().splitlines():
            record = decode_entry(line).record
            assert isinstance(record, bytes)  # format 2: a BSON document
            ids.append(str(bson.decode(record)["_id"]))
    return ids


def run_app_on_full_disk(url: str, journal: Path) -> tuple[dict[str, Any], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [url, str(journal), str(unused_port()), str(RECORDS)]
    done = subprocess.run(
        [sys.executable, "-c", APP_ON_A_FULL_DISK, *args],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def logged_losses(stderr: str) -> tuple[int, int]:
    """(lost, written before the refusal) summed over the producer's log lines."""
    found = re.findall(r"refused records .*?: (\d+) lost, .*?; (\d+) written before", stderr)
    return sum(int(lost) for lost, _ in found), sum(int(kept) for _, kept in found)


def test_a_full_journal_counts_every_record_once_and_delivers_what_it_kept(
    sqs_client: Any, make_queue: Callable[..., Any], small_disk: Path
) -> None:
    queue = make_queue()
    report, stderr = run_app_on_full_disk(queue.url, small_disk)
    stats, lost = report["stats"], report["lost"]
    on_disk = journal_ids(small_disk)

    assert "Traceback" not in stderr, stderr
    assert 0 < len(on_disk) < RECORDS  # the disk took some, not all
    assert stats["journaled"] == len(on_disk)
    assert stats["failed"] == len(lost) == RECORDS - len(on_disk)
    assert sorted(on_disk + lost) == sorted(f"r-{n}" for n in range(RECORDS))
    assert (stats["accepted"], stats["sent"], stats["buffered"]) == (RECORDS, 0, 0)
    assert all("No space left on device" in reason for reason in report["reasons"]), report
    lost_in_log, _ = logged_losses(stderr)
    assert lost_in_log == stats["failed"], stderr

    # SQS answers again: a new producer on that journal delivers exactly what it holds.
    with Producer(queue.url, sqs_client=sqs_client, journal_dir=small_disk) as again:
        wait_until(lambda: again.stats().replayed >= len(on_disk), 120, 0.05)
        assert again.stats().replayed == len(on_disk)
    received = [str(r.document["_id"]) for r in received_records(sqs_client, queue.url)]
    assert sorted(received) == sorted(on_disk)
    assert not Journal(small_disk).segments()
