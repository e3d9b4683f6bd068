"""Shared pieces of the fault tests: a consumer subprocess, records with a ledger,
and the exactly-once check against MongoDB and the dead-letter queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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


#: Every random choice in the tests starts here; RELIABILITY_SEED=N replays a run.
SEED = int(os.environ.get("RELIABILITY_SEED", "20261201"))


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

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def records(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        made = []
        with self.lock:  # web-app threads share one ledger
            start = len(self.sent)
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


def send_each(sqs_client: Any, url: str, bodies: Sequence[Body]) -> list[str]:
    """Sends the bodies (ten to a call); returns their SQS message ids, in order: the
    `ingest-source-message-id` of the dead letters they cause."""
    ids: list[str] = []
    for start in range(0, len(bodies), 10):
        entries: list[dict[str, Any]] = []
        for n, (body, attributes) in enumerate(bodies[start : start + 10]):
            entry: dict[str, Any] = {"Id": str(n), "MessageBody": body}
            if attributes:
                entry["MessageAttributes"] = attributes
            entries.append(entry)
        response = sqs_client.send_message_batch(QueueUrl=url, Entries=entries)
        if response.get("Failed"):
            raise AssertionError(f"SQS refused test messages: {response['Failed']}")
        by_entry = {done["Id"]: done["MessageId"] for done in response["Successful"]}
        ids += [by_entry[str(n)] for n in range(len(entries))]
    return ids


def _send_batch(sqs_client: Any, url: str, entries: list[dict[str, Any]]) -> int:
    response = sqs_client.send_message_batch(QueueUrl=url, Entries=entries)
    if response.get("Failed"):
        raise AssertionError(f"SQS refused test messages: {response['Failed']}")
    return len(entries)


class Feeder:
    """Sends waves of packed records (every third gzip) from a thread until stopped,
    so faults land while the pipeline is busy."""

    def __init__(
        self, sqs_client: Any, url: str, ledger: Ledger, per_wave: int = 200, pause: float = 0.4
    ) -> None:
        self._args = (sqs_client, url, ledger, per_wave, pause)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="feeder")
        self.error: BaseException | None = None

    def _run(self) -> None:
        sqs_client, url, ledger, per_wave, pause = self._args
        try:
            for wave in range(2000):  # bounded: a few minutes at most
                if self._stop.is_set():
                    return
                encoding = wire.GZIP if wave % 3 == 2 else wire.IDENTITY
                send_bodies(sqs_client, url, pack(ledger.records(per_wave), 25, encoding))
                self._stop.wait(pause)
        except BaseException as exc:  # surfaced by stop(): a send failure is a test failure
            self.error = exc

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        if self.error is not None:
            raise AssertionError(f"the feeder failed: {self.error!r}") from self.error


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
    stop_timeouts: int = 0  # SIGTERM not obeyed in time: killed instead (reported, see stop)

    def start(self) -> None:
        args = [
            str(INGEST), "run", "--queue-url", self.queue_url, "--mongo-uri", self.mongo_uri,
            "--database", self.database, "--metrics-port", "0", "--wait-seconds", "1",
            "--visibility-timeout", str(self.visibility_timeout), *self.extra_args,
        ]  # fmt: skip
        env = {
            **os.environ, "INGEST_RETRY_BASE_SECONDS": "0.5", "INGEST_SHUTDOWN_SECONDS": "5",
            **self.extra_env,
        }  # fmt: skip
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

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGCONT)  # in case a test left it paused
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop_timeouts += 1
            self.proc.kill()
            self.proc.wait(10)
            return -9

    def wait_ready(self, timeout: float = 30) -> None:
        """Until this run logs that it is consuming (imports and connections take ~1 s)."""
        starts = self.starts
        if not wait_until(lambda: self.log_text().count("consuming ") >= starts, timeout, 0.1):
            raise AssertionError(f"the consumer did not start; see {self.log_path}")

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
        for consumer in consumers:
            consumer.wait_ready()
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


# ------------------------------------------------------------------ summary


def record_summary(**counts: float) -> None:
    """Adds one line to $RELIABILITY_SUMMARY (set by scripts/reliability.py) for its total."""
    path = os.environ.get("RELIABILITY_SUMMARY")
    if path:
        import json

        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(counts) + "\n")


def crashes(consumers: Sequence[Consumer]) -> int:
    """Tracebacks in the consumers' logs: a worker that crashed on something."""
    return sum(consumer.log_text().count("Traceback") for consumer in consumers)
