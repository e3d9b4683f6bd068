"""Our consumer as users run it: `ingest run` subprocesses with their defaults.

The clock starts when the first process logs that it is consuming (so Python's
start-up is not counted) and stops when every record is in MongoDB. The processes'
CPU (user + system, all threads, from /proc) is read at the same two moments."""

from __future__ import annotations

import contextlib
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
        self.cpu = 0.0
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
        self.cpu_seconds()
        return self.finished

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process so far (every thread); once it has
        exited, the last reading (taken with every done_records)."""
        # Exited (or a zombie being reaped): keep the last reading.
        with contextlib.suppress(OSError, IndexError, ValueError):
            self.cpu = process_cpu_seconds(self.process.pid)
        return self.cpu

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


def process_cpu_seconds(pid: int) -> float:
    # Fields 14 and 15 of /proc/<pid>/stat (after the parenthesised name): utime, stime.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(url: str, database: str, expected: int, processes: int = 1) -> tuple[float, float]:
    """Run `processes` consumers on the queue until `expected` records are stored.
    Returns (seconds, CPU seconds of all the processes) from ready to drained."""
    mongo = infra.mongo_client()
    consumers = [Consumer(url, database) for _ in range(processes)]
    try:
        for consumer in consumers:
            if not consumer.ready.wait(60):
                raise RuntimeError(consumer.failure())
        cpu_at_ready = sum(c.cpu_seconds() for c in consumers)
        start = min(c.ready_at for c in consumers)
        end = infra.wait_until(
            lambda: sum(c.done_records() for c in consumers) >= expected,
            TIMEOUT,
            alive=lambda: any(c.alive() for c in consumers),
        )
        cpu = sum(c.cpu_seconds() for c in consumers) - cpu_at_ready
    finally:
        for consumer in consumers:
            consumer.stop()
    infra.check_stored(mongo, database, expected)
    mongo.close()
    return end - start, cpu


def run(
    documents: Sequence[dict[str, Any]],
    *,
    packed: bool,
    processes: int = 1,
    wire_format: int = 2,
    compression: str | None = None,
) -> dict[str, Any]:
    """Fill a fresh queue (packed by our Producer in `wire_format`, or one record per
    message, format 1 as the AWS CLI would send it), drain it."""
    from bench.records import record_lines

    client = infra.sqs_client()
    mongo = infra.mongo_client()
    with infra.temp_queue(client, "ours") as url, infra.temp_database(mongo, "ours") as db:
        if packed:
            options = {"compression": compression} if compression else {}
            infra.produce(client, url, documents, wire_format=wire_format, **options)
        else:
            infra.send_bodies(client, url, infra.single_bodies(record_lines(list(documents))))
        messages = infra.queue_count(client, url)
        seconds, cpu = drain(url, db, len(documents), processes)
    mongo.close()
    return {
        "records": len(documents),
        "messages": messages,
        "wire_format": wire_format if packed else 1,
        "processes": processes,
        "seconds": round(seconds, 3),
        "rps": infra.rate(len(documents), seconds),
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_record": round(cpu * 1e6 / len(documents), 1),
    }
