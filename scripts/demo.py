"""`make demo`: a simulated web app sends 100,000 operation records through the
producer into SQS while `ingest run` drains them into MongoDB.

Some records are sent twice on purpose (a client retrying a request); they must
collapse into one document. The last line of standard output is one JSON object.
Progress goes to standard error: one line redrawn in place on a terminal, a line every
10 s otherwise. The consumer's and the producer's logs go to .stack/demo-logs/. When
SQS or MongoDB stops answering, the demo stops the web app and the consumer and says
so in one line (exit code 1)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar

import boto3
import pymongo
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from bson import ObjectId
from pymongo import MongoClient, uri_parser
from pymongo.errors import PyMongoError

from producer import Producer, ProducerClosed

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = ("login", "logout", "view", "update_profile", "purchase", "search", "export", "delete")
# A server failing every call for this long is gone (one failed call may be a blip).
DEAD_AFTER_SECONDS = 5.0
PING_SECONDS = 3.0
FINAL_COUNT_SECONDS = 300.0
T = TypeVar("T")


class DemoFailed(Exception):
    """Ends the demo with this one line on standard error and exit code 1."""


class ServerDied(DemoFailed):
    pass


def operation_record(user: int, rng: random.Random) -> dict[str, Any]:
    """About 1 KB: what an audit log entry of a web app looks like."""
    return {
        "user_id": f"user-{user:07d}",
        "action": rng.choice(ACTIONS),
        "at": datetime.now(UTC),
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0 Safari/537.36",
        "request": {
            "method": rng.choice(("GET", "POST", "PUT")),
            "path": f"/api/v1/items/{rng.randrange(10**6)}",
            "status": rng.choice((200, 200, 200, 201, 204, 400, 404)),
            "duration_ms": round(rng.uniform(1, 900), 2),
        },
        "tags": rng.sample(["web", "mobile", "beta", "eu", "us", "paid", "free", "admin"], 3),
        "details": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz ", k=560)),
    }


def web_app(
    producer: Producer, count: int, seed: int, resend_every: int, sent: list[int],
    stop: threading.Event,
) -> None:  # fmt: skip
    rng = random.Random(seed)
    try:
        for n in range(count):
            if stop.is_set():
                return
            document = operation_record(rng.randrange(10**6), rng)
            producer.send("operations", document)
            sent[seed] += 1
            if resend_every and n % resend_every == 0:
                # The same record again (same _id): a retried request. Must collapse.
                producer.send("operations", dict(document))
                sent[seed] += 1
    except ProducerClosed:
        return  # the demo is stopping (a server died): the main thread says why


class Health:
    """Calls a server; raises ServerDied once its calls have failed for DEAD_AFTER_SECONDS."""

    def __init__(self, dead_after: float = DEAD_AFTER_SECONDS) -> None:
        self.dead_after = dead_after
        self._failing_since: dict[str, float] = {}

    def call(
        self, server: str, errors: tuple[type[Exception], ...], fn: Callable[[], T]
    ) -> T | None:
        try:
            value = fn()
        except errors as exc:
            since = self._failing_since.setdefault(server, time.monotonic())
            if time.monotonic() - since >= self.dead_after:
                detail = " ".join(str(exc).split())[:160]
                raise ServerDied(f"{server} stopped answering ({detail})") from None
            return None
        self._failing_since.pop(server, None)
        return value


class Progress:
    """One status line: redrawn in place on a terminal, printed every `every` s otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 10.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self._last = time.monotonic()
        self._drawn = False

    def show(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        elif time.monotonic() - self._last >= self.every:
            print(text, file=self.stream, flush=True)
            self._last = time.monotonic()

    def end(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def init_queue(name: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "init", "--queue-name", name],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise DemoFailed(f"`ingest init` failed: {last}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def start_consumer(queue_url: str, database: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "ingest.cli", "run", "--queue-url", queue_url,
        "--database", database, "--exit-when-idle", "3", "--wait-seconds", "2",
        "--metrics-port", "0",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def stop_consumer(consumer: subprocess.Popen[bytes]) -> None:
    if consumer.poll() is not None:
        return
    consumer.terminate()
    try:
        consumer.wait(15)
    except subprocess.TimeoutExpired:
        consumer.kill()
        consumer.wait(5)


def mongo_hosts(uri: str) -> str:
    try:
        return ",".join(f"{host}:{port}" for host, port in uri_parser.parse_uri(uri)["nodelist"])
    except Exception:  # an SRV URI needs DNS; name no host then (and never the credentials)
        return "(from INGEST_MONGO_URI)"


class Counter:
    """The documents written so far, counted in a thread of its own, one count at a time
    and never given up on: FerretDB counts by reading the whole table, seconds on a busy
    machine, and a count abandoned by a client timeout keeps running in PostgreSQL and
    holds a connection (a count a second piled them up until writes hung)."""

    def __init__(self, uri: str, database: str, every: float = 5.0) -> None:
        self.value: int | None = None
        self._client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=3000)
        self._collection = self._client[database]["operations"]
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-count", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(PyMongoError):
                self.value = self._collection.estimated_document_count()
            self._stop.wait(self._every)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)  # a count still running ends with the client
        self._client.close()


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:8]
        self.database = f"demo_{self.run_id}"
        uri = os.environ["INGEST_MONGO_URI"]
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=3000, socketTimeoutMS=10_000
        )
        self.sqs = boto3.client(
            "sqs",
            config=Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 2}),
        )
        self.sqs_server = f"the SQS server at {self.sqs.meta.endpoint_url}"
        self.mongo_server = f"MongoDB at {mongo_hosts(uri)}"
        self.health = Health()
        self.counter = Counter(uri, self.database)
        self.progress = Progress()
        self.started = time.monotonic()
        self.sent = [0] * args.threads
        self.queue: dict[str, str] = {}

    def run(self) -> int:
        args = self.args
        logs = ROOT / ".stack" / "demo-logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{self.run_id}.log"
        # The producer's warnings (SQS unreachable, journaling) go to the log, not the screen.
        logging.basicConfig(
            filename=log_path, level=logging.INFO,
            format="%(asctime)s demo %(levelname)s %(name)s: %(message)s",
        )  # fmt: skip
        logging.getLogger("botocore").setLevel(logging.WARNING)
        self.queue = init_queue(f"demo-{self.run_id}")
        url = self.queue["queue_url"]
        where = os.path.relpath(log_path)
        print(f"demo: queue {url} -> database {self.database}; logs in {where}", file=sys.stderr)

        journal = ROOT / ".stack" / "demo-journal" / self.run_id
        per_thread = args.records // args.threads
        stop = threading.Event()
        with log_path.open("ab") as consumer_log:
            consumer = start_consumer(url, self.database, consumer_log)
        producer = Producer(url, journal_dir=str(journal))
        threads = [
            threading.Thread(
                target=web_app,
                args=(producer, per_thread, i, args.resend_every, self.sent, stop),
                name=f"web-app-{i}",
                daemon=True,
            )
            for i in range(args.threads)
        ]
        completed = False
        try:
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                time.sleep(1)
                self.show()
            while not producer.flush(timeout=1):
                self.show()
            stats = producer.stats()
            producer.close()
            while consumer.poll() is None:
                time.sleep(1)
                self.show()
            completed = True
        except DemoFailed as exc:
            raise DemoFailed(
                f"{exc}; stopped after {sum(self.sent):,} of {per_thread * args.threads:,} records "
                f"were sent (consumer and producer log: {where})"
            ) from None
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            producer.close(timeout=5)  # what SQS did not take stays in the journal
            self.progress.end()
            self.counter.stop()
            stop_consumer(consumer)
            if not completed:
                self.drop_database()
        seconds = time.monotonic() - self.started
        with pymongo.timeout(FINAL_COUNT_SECONDS):  # an exact count, however slow
            in_mongo = self.mongo[self.database]["operations"].count_documents({})
        unique_ids = per_thread * args.threads
        summary = {
            "sent": sum(self.sent),
            "unique_ids": unique_ids,
            "in_mongo": in_mongo,
            "dead_lettered": count_messages(self.sqs, self.queue["dead_letter_url"]),
            "seconds": round(seconds, 2),
            "records_per_second": round(in_mongo / seconds),
            "producer": {"journaled": stats.journaled, "failed": stats.failed},
            "consumer_exit_code": consumer.returncode,
        }
        self.cleanup()
        print(json.dumps(summary))
        return 0 if in_mongo == unique_ids and consumer.returncode == 0 else 1

    def show(self) -> None:
        # A server is judged by whether it answers a ping; the count is only shown.
        self.health.call(self.mongo_server, (PyMongoError,), self._ping_mongo)
        written = self.counter.value
        depth = self.health.call(
            self.sqs_server, (BotoCoreError, ClientError),
            lambda: count_messages(self.sqs, self.queue["queue_url"]),
        )  # fmt: skip
        elapsed = time.monotonic() - self.started
        self.progress.show(
            f"demo: {elapsed:6.1f}s sent {sum(self.sent):7d}  in MongoDB {_n(written, 7)}  "
            f"queue {_n(depth, 5)} messages"
        )

    def _ping_mongo(self) -> None:
        with pymongo.timeout(PING_SECONDS):
            self.mongo.admin.command("ping")

    def drop_database(self) -> None:
        if os.environ.get("DEMO_KEEP"):
            return
        with contextlib.suppress(PyMongoError):  # MongoDB may be what died
            self.mongo.drop_database(self.database)

    def cleanup(self) -> None:
        if os.environ.get("DEMO_KEEP"):
            return
        for url in (self.queue["queue_url"], self.queue["dead_letter_url"]):
            self.sqs.delete_queue(QueueUrl=url)
        self.mongo.drop_database(self.database)


def _n(value: int | None, width: int) -> str:
    return "?".rjust(width) if value is None else f"{value:{width}d}"


def count_messages(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--resend-every", type=int, default=50, help="resend every Nth record")
    args = parser.parse_args()
    if args.records < 1 or args.threads < 1:
        parser.error("--records and --threads must be at least 1")
    try:
        return Demo(args).run()
    except DemoFailed as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    ObjectId()  # fail early if pymongo's bson is shadowed by the PyPI package `bson`
    sys.exit(main())
