"""Soak: a steady load (producer threads -> SQS -> consumer process -> MongoDB) for
MINUTES, sampling both processes' memory (RSS) and open files every few seconds.
Fails when either grows by more than 10% after warm-up. Prints one JSON line.

    python -m scripts.soak --minutes 30      (make soak MINUTES=30)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
from pymongo import MongoClient

from ingest.queues.sqs import SqsService
from producer import Producer
from tests.support.harness import Consumer, wait_until

LIMIT_PCT = 10.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def growth_pct(samples: list[float], warmup: int) -> float:
    """Growth from just after warm-up to the end, each side the median of a few samples."""
    steady = samples[warmup:]
    if len(steady) < 4:
        return 0.0
    width = max(2, len(steady) // 5)
    start, end = statistics.median(steady[:width]), statistics.median(steady[-width:])
    return round(100.0 * (end - start) / start, 2) if start else 0.0


class Counter:
    """Sequence numbers only: a ledger of every _id would itself grow the producer's RSS."""

    def __init__(self) -> None:
        self.sent = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> range:
        with self._lock:
            start, self.sent = self.sent, self.sent + count
        return range(start, start + count)


def load(producer: Producer, counter: Counter, rate: float, stop: threading.Event) -> None:
    """One web-app thread sending `rate` records a second."""
    interval = 10 / rate
    while not stop.wait(interval):
        for seq in counter.take(10):
            producer.send("events", {"seq": seq, "pad": "x" * 40})


def check(collection: Any, sent: int) -> dict[str, int]:
    """Lost and duplicated records by sequence number (after sampling: its memory is free)."""
    seen = bytearray(sent)
    duplicates = 0
    for doc in collection.find({}, {"seq": 1, "_id": 0}, batch_size=5000):
        seq = doc.get("seq", -1)
        if not 0 <= seq < sent or seen[seq]:
            duplicates += 1
        else:
            seen[seq] = 1
    return {"sent": sent, "lost": sent - sum(seen), "duplicates": duplicates}


def run(minutes: float, rate: float, sample_seconds: float) -> dict[str, Any]:
    sqs = boto3.client("sqs")
    name = f"soak-{uuid.uuid4().hex[:8]}"
    made = SqsService(sqs).create(name, visibility_timeout=30)
    mongo = MongoClient(
        os.environ["INGEST_MONGO_URI"], socketTimeoutMS=30000, serverSelectionTimeoutMS=10000
    )
    db = mongo[f"soak_{uuid.uuid4().hex[:8]}"]
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    counter = Counter()
    consumer = Consumer(made.url, os.environ["INGEST_MONGO_URI"], db.name,
                        workdir / "consumer.log", 30)  # fmt: skip
    producer = Producer(made.url, journal_dir=workdir / "journal")
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(producer, counter, rate / 4, stop), daemon=True)
               for _ in range(4)]  # fmt: skip
    samples: dict[str, list[float]] = {k: [] for k in ("c_rss", "p_rss", "c_fd", "p_fd")}
    try:
        consumer.start()
        consumer.wait_ready()
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(sample_seconds)
            samples["c_rss"].append(rss_bytes(consumer.pid))
            samples["p_rss"].append(rss_bytes(os.getpid()))
            samples["c_fd"].append(open_files(consumer.pid))
            samples["p_fd"].append(open_files(os.getpid()))
        stop.set()
        for thread in threads:
            thread.join(10)
        producer.flush(60)
        wait_until(lambda: db.events.count_documents({}) >= counter.sent, 120, 1.0)
        result = check(db.events, counter.sent)
    finally:
        stop.set()
        producer.close()
        consumer.stop()
        mongo.drop_database(db.name)
        for url in (made.url, made.dead_letter_url):
            sqs.delete_queue(QueueUrl=url)
    # Warm-up: a minute or the first fifth, whichever is longer (pools, caches, allocator arenas).
    warmup = max(2, int(60 / sample_seconds), len(samples["c_rss"]) // 5)
    growth = {key: growth_pct(values, warmup) for key, values in samples.items()}
    memory = max(growth["c_rss"], growth["p_rss"])
    # Open files are a few dozen: a pooled socket more is not a leak, so allow 4 on top.
    files_ok = all(
        values[-1] <= max(values[warmup : warmup + 3] or values) * (1 + LIMIT_PCT / 100) + 4
        for key, values in samples.items()
        if key.endswith("_fd") and values
    )
    return {
        "minutes": minutes, "rate_per_s": rate, "samples": len(samples["c_rss"]),
        **result,
        "consumer_rss_mib": round(samples["c_rss"][-1] / 2**20, 1) if samples["c_rss"] else 0,
        "producer_rss_mib": round(samples["p_rss"][-1] / 2**20, 1) if samples["p_rss"] else 0,
        "consumer_rss_growth_pct": growth["c_rss"], "producer_rss_growth_pct": growth["p_rss"],
        "consumer_fd_growth_pct": growth["c_fd"], "producer_fd_growth_pct": growth["p_fd"],
        "consumer_fds": samples["c_fd"][-1] if samples["c_fd"] else 0,
        "producer_fds": samples["p_fd"][-1] if samples["p_fd"] else 0,
        "soak_memory_growth_pct": memory,
        "ok": memory <= LIMIT_PCT and files_ok and result["lost"] == 0
        and result["duplicates"] == 0,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("MINUTES", 30)))
    parser.add_argument("--rate", type=float, default=400.0, help="records per second in all")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    args = parser.parse_args()
    report = run(args.minutes, args.rate, args.sample_seconds)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
