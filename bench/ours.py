"""Our consumer as users run it: `ingest run` subprocesses with their defaults.

The clock starts when the first process logs that it is consuming (so Python's
start-up is not counted) and stops when every record is in MongoDB."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bench import infra

INGEST = Path(sys.executable).with_name("ingest")
READY_LINE = "consuming "
TIMEOUT = 600.0
# Records accounted for: stored now, or found already stored (a redelivery).
_DONE_COUNTERS = ("ingest_records_written_total", "ingest_records_duplicate_total")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Consumer:
    """One `ingest run` process; remembers when it logged READY_LINE."""

    def __init__(self, url: str, database: str, extra: Sequence[str] = ()) -> None:
        # /metrics tells how many records are stored: polling MongoDB's count is
        # far too slow on FerretDB and would load the server being measured.
        self.port = free_port()
        command = [
            str(INGEST), "run", "--queue-url", url, "--database", database,
            "--exit-when-idle", "1", "--metrics-port", str(self.port), "--wait-seconds", "1",
            *extra,
        ]  # fmt: skip
        self.finished = 0.0
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.log: list[str] = []
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ
        )
        assert self.process.stderr is not None
        threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.log.append(line.rstrip())
            if READY_LINE in line and not self.ready.is_set():
                self.ready_at = time.monotonic()
                self.ready.set()

    def done_records(self) -> float:
        """Records this process has stored (or found stored), from its /metrics."""
        if not self.alive():
            return self.finished
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return self.finished  # exiting: keep the last value seen
        self.finished = sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(_DONE_COUNTERS)
        )
        return self.finished

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def failure(self) -> str:
        return f"ingest run exited {self.process.returncode}: " + " | ".join(self.log[-5:])


def drain(url: str, database: str, expected: int, processes: int = 1) -> float:
    """Run `processes` consumers on the queue until `expected` records are stored; seconds."""
    mongo = infra.mongo_client()
    consumers = [Consumer(url, database) for _ in range(processes)]
    try:
        for consumer in consumers:
            if not consumer.ready.wait(60):
                raise RuntimeError(consumer.failure())
        start = min(c.ready_at for c in consumers)
        end = infra.wait_until(
            lambda: sum(c.done_records() for c in consumers) >= expected,
            TIMEOUT,
            alive=lambda: any(c.alive() for c in consumers),
        )
    finally:
        for consumer in consumers:
            consumer.stop()
    infra.check_stored(mongo, database, expected)
    mongo.close()
    return end - start


def run(documents: Sequence[dict[str, Any]], *, packed: bool, processes: int = 1) -> dict[str, Any]:
    """Fill a fresh queue (packed by our Producer, or one record per message), drain it."""
    from bench.records import record_lines

    client = infra.sqs_client()
    mongo = infra.mongo_client()
    with infra.temp_queue(client, "ours") as url, infra.temp_database(mongo, "ours") as db:
        if packed:
            infra.produce(client, url, documents)
        else:
            infra.send_bodies(client, url, infra.single_bodies(record_lines(list(documents))))
        messages = infra.queue_count(client, url)
        seconds = drain(url, db, len(documents), processes)
    mongo.close()
    return {
        "records": len(documents),
        "messages": messages,
        "processes": processes,
        "seconds": round(seconds, 3),
        "rps": infra.rate(len(documents), seconds),
    }
