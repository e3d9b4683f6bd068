"""Fork safety against the real local ElasticMQ: a worker forked at any moment after
the parent's first send delivers its records, and a surviving producer replays the
journal a dead sibling left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from producer import Producer
from tests.support import ROOT
from tests.support.queues import received_records
from tests.support.servers import free_port as unused_port
from tests.support.waiting import wait_until

FORKS = 20
WINDOW_MS = 500
CHILD_RECORDS = 30

# A web app as gunicorn --preload runs it: the Producer is built in the master (which
# has not imported boto3), the master sends once, and a worker is forked `delay_ms`
# later, while the master's sender thread may still be importing boto3 or building
# its client. The worker sends its own records and reports what its producer saw.
FORKING_APP = textwrap.dedent(
    """
    import json, os, sys, time
    from producer import Producer

    url, journal_dir, tag, delay_ms, count = sys.argv[1:6]
    producer = Producer(url, journal_dir=journal_dir)
    assert "boto3" not in sys.modules  # the app itself never imported it
    first_send = time.monotonic()
    producer.send("events", {"_id": f"{tag}-parent"})
    # The sweep's deliberate delay: the fork lands this long after the first send.
    time.sleep(max(0.0, first_send + int(delay_ms) / 1000 - time.monotonic()))
    client_built = producer._client is not None
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for n in range(int(count)):
                producer.send("events", {"_id": f"{tag}-child-{n}"})
            producer.close(30)
            stats = producer.stats().as_dict()
            os.write(1, (json.dumps({"child": stats}) + "\\n").encode())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    producer.close(30)
    print(json.dumps({
        "parent": producer.stats().as_dict(), "child_exit": os.waitstatus_to_exitcode(status),
        "client_built_at_fork": client_built,
    }), flush=True)
    """
)


def _fork_once(url: str, journal: Path, tag: str, delay_ms: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [url, str(journal), tag, str(delay_ms), str(CHILD_RECORDS)]
    done = subprocess.run(
        [sys.executable, "-c", FORKING_APP, *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = {"tag": tag, "delay_ms": delay_ms, "stderr": done.stderr}
    for line in done.stdout.splitlines():
        report.update(json.loads(line))
    return report


def test_fork_sweep_every_worker_forked_after_the_first_send_delivers(
    sqs_client: Any, make_queue: Callable[..., Any], tmp_path: Path
) -> None:
    queue = make_queue()
    delays = [round(k * WINDOW_MS / (FORKS - 1)) for k in range(FORKS)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(
            pool.map(
                lambda k: _fork_once(queue.url, tmp_path / f"journal-{k}", f"f{k}", delays[k]),
                range(FORKS),
            )
        )
    # The sweep reached the sender's start-up: some forks came before its client existed.
    assert any(not r["client_built_at_fork"] for r in reports), reports
    undelivered = [
        f"fork at {r['delay_ms']} ms: child exit {r['child_exit']}, {r.get('child')}, "
        f"stderr: {r['stderr'][-1500:]!r}"
        for r in reports
        if r["child_exit"] != 0
        or (r["child"]["sent"], r["child"]["journaled"], r["child"]["failed"])
        != (CHILD_RECORDS, 0, 0)
    ]
    assert undelivered == [], f"{len(undelivered)} of {FORKS} workers did not deliver"
    assert [r["stderr"] for r in reports if "Traceback" in r["stderr"]] == []
    received = [str(r.document["_id"]) for r in received_records(sqs_client, queue.url)]
    expected = [f"f{k}-child-{n}" for k in range(FORKS) for n in range(CHILD_RECORDS)]
    expected += [f"f{k}-parent" for k in range(FORKS)]
    assert sorted(received) == sorted(expected)  # every record, once


# A sibling worker during an outage it does not live to see the end of: its SQS is
# unreachable, so its records go to the shared journal; then it is killed.
DOOMED_SIBLING = textwrap.dedent(
    """
    import sys, time
    import boto3
    from botocore.config import Config
    from producer import Producer

    url, journal_dir, port, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}",
                          config=Config(retries={"total_max_attempts": 1}))
    producer = Producer(url, sqs_client=client, journal_dir=journal_dir, probe_seconds=3600)
    for n in range(count):
        producer.send("events", {"_id": f"sibling-{n}"})
    assert producer.flush(30)
    assert producer.stats().journaled == count, producer.stats()
    print("journaled", flush=True)
    time.sleep(60)  # killed here: not a wait for anything, the parent SIGKILLs this child
    """
)


def test_a_surviving_worker_replays_the_journal_a_dead_sibling_left(
    sqs_client: Any, make_queue: Callable[..., Any], tmp_path: Path
) -> None:
    queue = make_queue()
    journal = tmp_path / "journal"
    survivor = Producer(
        queue.url, sqs_client=sqs_client, journal_dir=journal,
        probe_seconds=0.05, journal_scan_seconds=0.05,
    )  # fmt: skip
    try:
        survivor.send("events", {"_id": "survivor-0"})
        assert survivor.flush(30)
        # It has looked at the journal, found nothing, and stopped probing it.
        assert wait_until(lambda: not survivor._sender._journal_pending)
        _journal_and_die(queue.url, journal, 400)
        assert wait_until(lambda: survivor.stats().replayed == 400, timeout=60)
    finally:
        survivor.close()
    assert not list(journal.glob("*.seg"))
    received = sorted(str(r.document["_id"]) for r in received_records(sqs_client, queue.url))
    assert received == sorted(["survivor-0", *(f"sibling-{n}" for n in range(400))])


def _journal_and_die(url: str, journal: Path, count: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [url, str(journal), str(unused_port()), str(count)]
    sibling = subprocess.Popen(
        [sys.executable, "-c", DOOMED_SIBLING, *args], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert sibling.stdout is not None
        assert sibling.stdout.readline().strip() == "journaled"
        assert list(journal.glob("*.seg"))
    finally:
        sibling.send_signal(signal.SIGKILL)
        sibling.wait(10)


# A script that hands its work to a multiprocessing pool of forked workers, each sending
# through the Producer it inherited, and ends the pool with close() and join().
POOL_APP = textwrap.dedent(
    """
    import json, multiprocessing, sys
    from producer import Producer

    url, journal_dir = sys.argv[1:3]
    producer = Producer(url, journal_dir=journal_dir)
    producer.send("events", {"_id": "parent"})

    def work(worker):
        for k in range(25):
            producer.send("events", {"_id": f"w{worker}-{k}"})
        return worker

    pool = multiprocessing.get_context("fork").Pool(3)
    print(json.dumps(pool.map(work, range(6))), flush=True)
    pool.close()
    pool.join()
    producer.close(30)
    """
)


def test_multiprocessing_pool_workers_deliver_what_they_sent(
    sqs_client: Any, make_queue: Callable[..., Any], tmp_path: Path
) -> None:
    queue = make_queue()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", POOL_APP, queue.url, str(tmp_path / "journal")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == list(range(6))
    received = sorted(str(r.document["_id"]) for r in received_records(sqs_client, queue.url))
    assert received == sorted(["parent"] + [f"w{w}-{k}" for w in range(6) for k in range(25)])
