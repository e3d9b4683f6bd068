"""`make demo`: a simulated web app sends 100,000 operation records through the
producer into SQS while `ingest run` drains them into MongoDB.

Some records are sent twice on purpose (a client retrying a request); they must
collapse into one document. The last line of standard output is one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from bson import ObjectId
from pymongo import MongoClient

from producer import Producer

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = ("login", "logout", "view", "update_profile", "purchase", "search", "export", "delete")


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


def web_app(producer: Producer, count: int, seed: int, resend_every: int, sent: list[int]) -> None:
    rng = random.Random(seed)
    for n in range(count):
        document = operation_record(rng.randrange(10**6), rng)
        producer.send("operations", document)
        sent[seed] += 1
        if resend_every and n % resend_every == 0:
            # The same record again (same _id): a retried request. Must collapse.
            producer.send("operations", dict(document))
            sent[seed] += 1


def init_queue(name: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "ingest.cli", "init", "--queue-name", name],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def start_consumer(queue_url: str, database: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "ingest.cli", "run", "--queue-url", queue_url,
        "--database", database, "--exit-when-idle", "3", "--wait-seconds", "2",
        "--metrics-port", "0",
    ]  # fmt: skip
    return subprocess.Popen(command)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--resend-every", type=int, default=50, help="resend every Nth record")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    queue = init_queue(f"demo-{run_id}")
    database = f"demo_{run_id}"
    mongo: MongoClient[dict[str, Any]] = MongoClient(os.environ["INGEST_MONGO_URI"])
    sqs = boto3.client("sqs")
    print(f"demo: queue {queue['queue_url']} -> database {database}", file=sys.stderr)

    started = time.monotonic()
    consumer = start_consumer(queue["queue_url"], database)
    journal = ROOT / ".stack" / "demo-journal" / run_id
    sent = [0] * args.threads
    per_thread = args.records // args.threads
    with Producer(queue["queue_url"], journal_dir=str(journal)) as producer:
        threads = [
            threading.Thread(
                target=web_app, args=(producer, per_thread, i, args.resend_every, sent)
            )
            for i in range(args.threads)
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            progress(started, sum(sent), mongo[database], sqs, queue["queue_url"])
        producer.flush()
        stats = producer.stats()
    unique_ids = per_thread * args.threads
    while consumer.poll() is None:
        time.sleep(1)
        progress(started, sum(sent), mongo[database], sqs, queue["queue_url"])
    seconds = time.monotonic() - started
    in_mongo = mongo[database]["operations"].count_documents({})
    dead = count_messages(sqs, queue["dead_letter_url"])
    summary = {
        "sent": sum(sent),
        "unique_ids": unique_ids,
        "in_mongo": in_mongo,
        "dead_lettered": dead,
        "seconds": round(seconds, 2),
        "records_per_second": round(in_mongo / seconds),
        "producer": {"journaled": stats.journaled, "failed": stats.failed},
        "consumer_exit_code": consumer.returncode,
    }
    cleanup(sqs, queue, mongo, database)
    print(json.dumps(summary))
    return 0 if in_mongo == unique_ids and consumer.returncode == 0 else 1


def progress(started: float, sent: int, db: Any, sqs: Any, url: str) -> None:
    written = db["operations"].estimated_document_count()
    depth = count_messages(sqs, url)
    elapsed = time.monotonic() - started
    print(
        f"demo: {elapsed:6.1f}s sent {sent:7d}  in MongoDB {written:7d}  queue {depth:5d} messages",
        file=sys.stderr,
    )


def count_messages(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def cleanup(sqs: Any, queue: dict[str, str], mongo: Any, database: str) -> None:
    if os.environ.get("DEMO_KEEP"):
        return
    for url in (queue["queue_url"], queue["dead_letter_url"]):
        sqs.delete_queue(QueueUrl=url)
    mongo.drop_database(database)


if __name__ == "__main__":
    ObjectId()  # fail early if pymongo's bson is shadowed by the PyPI package `bson`
    sys.exit(main())
