"""What fork safety costs: Producer() construction, send() on the caller's thread, and
os.fork() in a process whose producer has sent once (the fork waits while the sender
thread is still importing boto3 and the rest; afterwards it only looks at the sender
thread's stack). Each fork is timed in a fresh process, since only the first moments
after the first send have imports in flight.

    python -m bench.fork_safety [--forks 20] [--window-ms 500]

No server needed: the forking processes send to an endpoint nobody listens on (their
records go to a throwaway journal), which changes nothing about the imports.
Prints one JSON object; run it on another checkout (PYTHONPATH) to compare."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.infra import AcceptingSQS
from producer import Producer

URL = "http://sqs.invalid/000000000000/q"

FORK_ONCE = textwrap.dedent(
    """
    import json, os, sys, time
    from producer import Producer

    url, journal_dir, delay_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
    producer = Producer(url, journal_dir=journal_dir, probe_seconds=3600)
    first_send = time.monotonic()
    producer.send("events", {"n": 0})
    time.sleep(max(0.0, first_send + delay_ms / 1000 - time.monotonic()))
    before = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    took = time.perf_counter() - before
    os.waitpid(pid, 0)
    print(json.dumps({"delay_ms": delay_ms, "fork_ms": took * 1000}))
    producer.close(5)
    """
)


def _median_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


def _p99_us(samples: list[float]) -> float:
    return round(sorted(samples)[int(len(samples) * 0.99)] * 1e6, 1)


def construction(journal: Path, count: int) -> dict[str, float]:
    took = []
    for _ in range(count):
        start = time.perf_counter()
        producer = Producer(URL, sqs_client=AcceptingSQS(), journal_dir=journal)
        took.append(time.perf_counter() - start)
        producer.close()
    return {"producer_construct_p50_us": _median_us(took)}


def sends(journal: Path, count: int) -> dict[str, float]:
    took = []
    with Producer(URL, sqs_client=AcceptingSQS(), journal_dir=journal) as producer:
        for n in range(count):
            document = {"n": n, "text": "x" * 900}
            start = time.perf_counter()
            producer.send("events", document)
            took.append(time.perf_counter() - start)
    return {"send_p50_us": _median_us(took), "send_p99_us": _p99_us(took)}


def forks(journal: Path, count: int, window_ms: int) -> dict[str, Any]:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/000000000000/q"
    env = {**os.environ, "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{port}"}
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    rows = []
    for k in range(count):
        delay = round(k * window_ms / max(1, count - 1))
        out = subprocess.run(
            [sys.executable, "-c", FORK_ONCE, url, str(journal / f"f{k}"), str(delay)],
            capture_output=True, text=True, env=env, check=True, timeout=120,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.splitlines()[0]))
    late = [r["fork_ms"] for r in rows if r["delay_ms"] == window_ms]
    return {
        "fork_ms_by_delay": {r["delay_ms"]: round(r["fork_ms"], 2) for r in rows},
        "fork_ms_max": round(max(r["fork_ms"] for r in rows), 2),
        "fork_ms_at_window_end": round(late[0], 2) if late else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--window-ms", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp)
        result: dict[str, Any] = {}
        result.update(construction(journal / "c", 200))
        result.update(sends(journal / "s", 20_000))
        result.update(forks(journal, args.forks, args.window_ms))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
