"""Fault soak: two `ingest run` replicas sharing a write ceiling, fed at a share of it
for MINUTES, with a fault every FAULT_EVERY minutes in turn: SIGKILL of one consumer
(restarted at once), MongoDB paused (SIGSTOP to its PostgreSQL, under a FerretDB of the
soak's own) for 30 s, SQS down (a proxy refusing every connection) for 30 s. At the
end: every record in MongoDB exactly once, nothing dead-lettered, and the consumers'
memory (RSS, sampled every few seconds after warm-up) grown by less than LIMIT_PCT.
Prints one JSON line.

    python -m scripts.fault_soak --minutes 60        (make fault-soak MINUTES=60)

Run it on a quiet machine: it is a measurement, not a test (CI does not run it)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from pymongo import MongoClient

from ingest.queues.sqs import SqsService
from producer import Producer
from scripts.soak import Counter, check, growth_pct, load, rss_bytes
from tests.support.harness import Consumer, wait_until
from tests.support.servers import PrivateFerretDB, PrivatePostgres
from tests.support.tcpproxy import TcpProxy

LIMIT_PCT = 5.0
FAULT_SECONDS = 30.0


def _sqs_target() -> tuple[str, int]:
    host, port = os.environ["AWS_ENDPOINT_URL_SQS"].rsplit("//", 1)[1].split(":")
    return host, int(port.rstrip("/"))


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.counter = Counter()
        self.faults: list[dict[str, Any]] = []
        self.samples: dict[int, list[float]] = {0: [], 1: []}

    def run(self) -> dict[str, Any]:
        args = self.args
        with (
            PrivatePostgres() as postgres,
            PrivateFerretDB(
                self.workdir / "ferretdb", self.workdir / "ferretdb.log", postgres.url
            ) as ferret,
            TcpProxy(*_sqs_target()) as proxy,
        ):
            endpoint = f"http://127.0.0.1:{proxy.port}"
            sqs = boto3.client(
                "sqs", endpoint_url=endpoint, config=Config(retries={"total_max_attempts": 2})
            )
            made = SqsService(sqs).create(
                f"fault-soak-{uuid.uuid4().hex[:8]}", visibility_timeout=30
            )
            db = MongoClient(ferret.uri, serverSelectionTimeoutMS=60000)[
                f"soak_{uuid.uuid4().hex[:8]}"
            ]
            consumers = [
                Consumer(made.url, ferret.uri, db.name, self.workdir / f"c{n}.log", 30,
                         extra_args=["--max-write-rate", str(args.ceiling)],
                         extra_env={"AWS_ENDPOINT_URL_SQS": endpoint, "INGEST_SHUTDOWN_SECONDS": "20"})
                for n in range(2)
            ]  # fmt: skip
            client = boto3.client("sqs", endpoint_url=endpoint,
                                  config=Config(connect_timeout=1, read_timeout=5,
                                                retries={"total_max_attempts": 1}))  # fmt: skip
            producer = Producer(made.url, sqs_client=client, journal_dir=self.workdir / "journal",
                                probe_seconds=1.0)  # fmt: skip
            stop = threading.Event()
            rate = args.ceiling * args.share
            threads = [threading.Thread(target=load, args=(producer, self.counter, rate / 4, stop),
                                        daemon=True) for _ in range(4)]  # fmt: skip
            try:
                for consumer in consumers:
                    consumer.start()
                for consumer in consumers:
                    consumer.wait_ready()
                for thread in threads:
                    thread.start()
                self._loop(consumers, postgres, proxy)
                stop.set()
                for thread in threads:
                    thread.join(10)
                producer.flush(120)
                wait_until(lambda: db.events.count_documents({}) >= self.counter.sent, 900, 2.0)
                result = check(db.events, self.counter.sent)
                dead = made.dead_letter_depth()
            finally:
                stop.set()
                producer.close()
                for consumer in consumers:
                    consumer.stop()
                db.client.drop_database(db.name)
        warmup = max(2, int(120 / args.sample_seconds))
        growth = {n: growth_pct(values, warmup) for n, values in self.samples.items()}
        dead_letters = dead.total if dead is not None else 0
        return {
            "minutes": args.minutes, "ceiling": args.ceiling, "rate_per_s": rate,
            **result, "dead_lettered": dead_letters, "faults": self.faults,
            "consumer_rss_mib": [round(v[-1] / 2**20, 1) for v in self.samples.values() if v],
            "consumer_rss_growth_pct": list(growth.values()),
            "consumer_restarts": sum(c.starts - 1 for c in consumers),
            "ok": result["lost"] == 0 and result["duplicates"] == 0 and dead_letters == 0
            and max(growth.values()) < LIMIT_PCT,
        }  # fmt: skip

    def _loop(self, consumers: list[Consumer], postgres: PrivatePostgres, proxy: TcpProxy) -> None:
        args = self.args
        faults: itertools.cycle[tuple[str, Callable[[], None]]] = itertools.cycle([
            ("kill-consumer", lambda: self._kill(consumers, len(self.faults) % 2)),
            ("mongodb-paused", lambda: self._hold(postgres.pause, postgres.resume)),
            ("sqs-down", lambda: self._hold(proxy.refuse, proxy.passthrough)),
        ])  # fmt: skip
        started = time.monotonic()
        deadline = started + args.minutes * 60
        next_fault = started + args.fault_every * 60
        while time.monotonic() < deadline:
            time.sleep(args.sample_seconds)
            for n, consumer in enumerate(consumers):
                if consumer.alive():
                    self.samples[n].append(rss_bytes(consumer.pid))
            if time.monotonic() >= next_fault:
                name, fault = next(faults)
                at = round(time.monotonic() - started)
                fault()
                self.faults.append({"at_s": at, "fault": name})
                next_fault += args.fault_every * 60

    def _kill(self, consumers: list[Consumer], which: int) -> None:
        consumers[which].kill()
        consumers[which].start()
        consumers[which].wait_ready(60)
        # A restarted process starts its memory afresh: compare like with like.
        self.samples[which].clear()

    @staticmethod
    def _hold(begin: Callable[[], None], end: Callable[[], None]) -> None:
        begin()
        try:
            time.sleep(FAULT_SECONDS)
        finally:
            end()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("MINUTES", 60)))
    parser.add_argument("--fault-every", type=float, default=5.0, help="minutes between faults")
    parser.add_argument(
        "--ceiling", type=float, default=500.0, help="the pool's write ceiling, records/s"
    )
    parser.add_argument(
        "--share", type=float, default=0.8, help="the load, as a share of the ceiling"
    )
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fault-soak-"))
    report = Soak(args, workdir).run()
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
