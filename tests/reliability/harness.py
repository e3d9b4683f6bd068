"""Shared pieces of the fault tests: a consumer subprocess, records with a ledger,
and the exactly-once check against MongoDB and the dead-letter queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId

from producer import wire

INGEST = Path(sys.executable).with_name("ingest")
#: RELIABILITY_FULL=1 (set by `make reliability`) turns the quick cases into long ones.
FULL = os.environ.get("RELIABILITY_FULL", "") not in ("", "0")


def scale(quick: int, full: int) -> int:
    return full if FULL else quick


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ------------------------------------------------------------------ records


@dataclass
class Ledger:
    """Every good record sent, by _id, so the check can tell lost from duplicated."""

    collection: str
    sent: dict[ObjectId, int] = field(default_factory=dict)  # _id -> seq
    dead: list[str] = field(default_factory=list)  # bodies sent to be dead-lettered

    @property
    def poison(self) -> int:
        return len(self.dead)

    def records(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        start = len(self.sent)
        made = []
        for seq in range(start, start + count):
            oid = ObjectId()
            self.sent[oid] = seq
            made.append((self.collection, {"_id": oid, "seq": seq, "pad": "x" * 40}))
        return made


Body = tuple[str, dict[str, dict[str, str]]]


def pack(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    per_message: int,
    encoding: str = wire.IDENTITY,
) -> list[Body]:
    bodies = []
    for start in range(0, len(records), per_message):
        chunk = records[start : start + per_message]
        text = wire.join_lines(wire.encode_record(c, d) for c, d in chunk)
        bodies.append(
            (wire.compress_body(text, encoding), wire.message_attributes(encoding, len(chunk)))
        )
    return bodies


def poison_bodies(ledger: Ledger, count: int) -> list[Body]:
    """`count` unreadable messages, each worth exactly one dead letter."""
    bodies = [
        f"poison {len(ledger.dead) + n} of {ledger.collection}: not JSON" for n in range(count)
    ]
    ledger.dead.extend(bodies)
    return [(body, {}) for body in bodies]


def send_bodies(sqs_client: Any, url: str, bodies: Iterable[Body]) -> int:
    batch: list[dict[str, Any]] = []
    sent = 0
    for body, attributes in bodies:
        entry: dict[str, Any] = {"Id": str(len(batch)), "MessageBody": body}
        if attributes:
            entry["MessageAttributes"] = attributes
        batch.append(entry)
        if len(batch) == 10:
            sent += _send_batch(sqs_client, url, batch)
            batch = []
    if batch:
        sent += _send_batch(sqs_client, url, batch)
    return sent


def _send_batch(sqs_client: Any, url: str, entries: list[dict[str, Any]]) -> int:
    response = sqs_client.send_message_batch(QueueUrl=url, Entries=entries)
    if response.get("Failed"):
        raise AssertionError(f"SQS refused test messages: {response['Failed']}")
    return len(entries)


# ----------------------------------------------------------------- consumer


@dataclass
class Consumer:
    """`.venv/bin/ingest run` as a subprocess, its stderr kept in a file."""

    queue_url: str
    mongo_uri: str
    database: str
    log_path: Path
    visibility_timeout: int = 10
    extra_args: Sequence[str] = ()
    extra_env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        args = [
            str(INGEST), "run", "--queue-url", self.queue_url, "--mongo-uri", self.mongo_uri,
            "--database", self.database, "--metrics-port", "0", "--wait-seconds", "1",
            "--visibility-timeout", str(self.visibility_timeout), *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, "INGEST_RETRY_BASE_SECONDS": "0.5", **self.extra_env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stderr=log, stdout=log, env=env)
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)

    def stop(self, timeout: float = 40) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGCONT)  # in case a test left it paused
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def running(consumers: Sequence[Consumer]) -> Iterator[Sequence[Consumer]]:
    """Starts the consumers; always stops them (even paused ones) afterwards."""
    try:
        for consumer in consumers:
            consumer.start()
        yield consumers
    finally:
        for consumer in consumers:
            consumer.stop()


# -------------------------------------------------------------------- check


@dataclass(frozen=True)
class Tally:
    sent: int
    stored: int
    lost: int
    duplicates: int  # documents beyond one per record sent (same seq under another _id, or unknown)

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "lost": self.lost, "duplicates": self.duplicates}


def tally(collection: Any, ledger: Ledger) -> Tally:
    seen: dict[int, int] = {}
    found: set[ObjectId] = set()
    for doc in collection.find({}, {"_id": 1, "seq": 1}):
        found.add(doc["_id"])
        seen[doc.get("seq", -1)] = seen.get(doc.get("seq", -1), 0) + 1
    stored = sum(seen.values())
    lost = sum(1 for oid in ledger.sent if oid not in found)
    extra = sum(count - 1 for count in seen.values() if count > 1)
    unknown = sum(1 for oid in found if oid not in ledger.sent)
    return Tally(len(ledger.sent), stored, lost, extra + unknown)


def wait_for_all(collection: Any, ledger: Ledger, timeout: float) -> Tally:
    wait_until(lambda: collection.count_documents({}) >= len(ledger.sent), timeout, interval=0.5)
    return tally(collection, ledger)
