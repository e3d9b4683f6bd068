"""Peak shaving you can see: a burst at five times the ceiling goes into SQS, the
consumer writes it into MongoDB at the ceiling. Samples every 0.5 s and draws
docs/peak-shaving.png (produced/s, written/s, queue depth; --adaptive also the
consumer's ceiling while a load generator slows MongoDB). Last stdout line: JSON.

    make demo-peak              # fixed ceiling
    .venv/bin/python -m scripts.demo_peak --adaptive
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from bson import ObjectId
from pymongo import MongoClient

from producer import wire

INGEST = Path(sys.executable).with_name("ingest")
PER_MESSAGE = 50


@dataclass
class Sample:
    t: float
    produced: int
    written: int
    depth: int
    ceiling: float


@dataclass
class Run:
    produced: int = 0
    samples: list[Sample] = field(default_factory=list)
    load: tuple[float, float] | None = None  # when the load generator ran


def _produce(sqs: Any, url: str, rate: float, seconds: float, run: Run) -> None:
    """Sends `rate` records/s for `seconds`, paced every 0.1 s."""
    start = time.monotonic()
    seq = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(rate * min(elapsed + 0.1, seconds)) - seq
        bodies = []
        for first in range(seq, seq + due, PER_MESSAGE):
            n = min(PER_MESSAGE, seq + due - first)
            docs = ({"_id": ObjectId(), "seq": i, "pad": "x" * 40} for i in range(first, first + n))
            lines = [wire.encode_record("events", d) for d in docs]
            bodies.append((wire.join_lines(lines), n))
        for i in range(0, len(bodies), 10):
            chunk = bodies[i : i + 10]
            entries = [
                {
                    "Id": str(j),
                    "MessageBody": b,
                    "MessageAttributes": wire.message_attributes(wire.IDENTITY, n),
                }
                for j, (b, n) in enumerate(chunk)
            ]
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
            run.produced += sum(n for _, n in chunk)
        seq += due
        time.sleep(max(0.0, start + elapsed + 0.1 - time.monotonic()))


def _load(uri: str, stop: threading.Event, threads: int = 6) -> None:
    """Competes for the same server: heavy inserts into another database."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    name = f"demo_load_{uuid.uuid4().hex[:6]}"

    def work() -> None:
        docs = [{"pad": "y" * 400, "n": i} for i in range(500)]
        while not stop.is_set():
            client[name].junk.insert_many([dict(d) for d in docs], ordered=False)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    stop.wait()
    for w in workers:
        w.join(10)
    client.drop_database(name)


def _consumer(port: int) -> dict[str, float]:
    """The consumer's ceiling and records written, from its /metrics (counting documents
    in FerretDB takes seconds once there are many)."""
    wanted = {"ingest_write_ceiling_records_per_second": "ceiling",
              "ingest_records_written_total": "written"}  # fmt: skip
    found: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                name, _, value = line.partition(" ")
                if name in wanted:
                    found[wanted[name]] = float(value)
    except OSError:
        pass
    return found


def _depth(sqs: Any, url: str) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def _highest_rate(samples: list[Sample], skip: float) -> float:
    """Highest written/s over any one-second window (samples 0.5 s apart), after `skip` s."""
    best = 0.0
    for i, a in enumerate(samples):
        for b in samples[i + 1 :]:
            if b.t - a.t >= 1.0:
                if a.t >= skip:
                    best = max(best, (b.written - a.written) / (b.t - a.t))
                break
    return best


def _plot(run: Run, path: Path, ceiling: float, adaptive: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run.samples
    t = [x.t for x in s]

    def rate(attr: str) -> list[float]:
        pairs = itertools.pairwise(s)
        return [0.0] + [(getattr(b, attr) - getattr(a, attr)) / (b.t - a.t) for a, b in pairs]

    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(t, rate("produced"), label="produced records/s", color="tab:orange")
    ax.plot(t, rate("written"), label="written to MongoDB records/s", color="tab:blue")
    if adaptive:
        ax.plot(t, [x.ceiling for x in s], "--", label="consumer's ceiling", color="tab:green")
        if run.load:
            ax.axvspan(*run.load, color="red", alpha=0.08, label="MongoDB under other load")
    else:
        ax.axhline(ceiling, ls="--", color="tab:green", label=f"ceiling {ceiling:.0f}/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("records / second")
    right = ax.twinx()
    right.plot(t, [x.depth for x in s], color="tab:gray", alpha=0.6, label="SQS depth (messages)")
    right.set_ylabel("messages in SQS")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    ax.set_title("Peak shaving: SQS takes the burst, MongoDB sees the ceiling")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ceiling", type=float, default=1000.0)
    p.add_argument("--burst-factor", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--adaptive", action="store_true")
    p.add_argument("--target-latency", default="50ms")
    p.add_argument("--port", type=int, default=0, help="consumer's /metrics port (0: a free one)")
    args = p.parse_args()
    args.port = args.port or _free_port()
    uri = os.environ["INGEST_MONGO_URI"]
    sqs = boto3.client("sqs")
    name = f"demo-peak-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    database = f"demo_peak_{uuid.uuid4().hex[:8]}"
    mongo: MongoClient[dict[str, Any]] = MongoClient(uri)
    cmd = [str(INGEST), "run", "--queue-url", url, "--database", database, "--mongo-uri", uri,
           "--max-write-rate", str(args.ceiling), "--metrics-port", str(args.port),
           "--wait-seconds", "1", "--writers", "8"]  # fmt: skip
    if args.adaptive:
        cmd += ["--write-rate", "adaptive", "--target-write-latency", args.target_latency]
    log = open(f"/tmp/{name}.log", "wb")  # noqa: SIM115
    consumer = subprocess.Popen(cmd, stdout=log, stderr=log)
    run = Run()
    try:
        return _demo(args, sqs, url, mongo, database, uri, run, consumer)
    finally:
        consumer.terminate()
        consumer.wait(40)
        sqs.delete_queue(QueueUrl=url)
        mongo.drop_database(database)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _demo(
    args: Any, sqs: Any, url: str, mongo: Any, database: str, uri: str, run: Run, consumer: Any
) -> int:
    events = mongo[database].events
    time.sleep(3.0)  # the consumer starts
    producer = threading.Thread(
        target=_produce, args=(sqs, url, args.ceiling * args.burst_factor, args.seconds, run)
    )
    stop_load = threading.Event()
    start = time.monotonic()
    producer.start()
    total = int(args.ceiling * args.burst_factor * args.seconds)
    finished: float | None = None
    loader: threading.Thread | None = None
    while True:
        if consumer.poll() is not None:
            raise SystemExit(f"the consumer exited ({consumer.returncode}); see its log in /tmp")
        now = time.monotonic() - start
        seen = _consumer(args.port)
        written = int(seen.get("written", 0))
        ceiling = seen.get("ceiling", float("nan"))
        run.samples.append(Sample(now, run.produced, written, _depth(sqs, url), ceiling))
        if args.adaptive and loader is None and now >= args.seconds:  # slow MongoDB mid-drain
            loader = threading.Thread(target=_load, args=(uri, stop_load), daemon=True)
            loader.start()
            run.load = (now, now)
        if loader is not None and run.load and now - run.load[0] >= 20 and not stop_load.is_set():
            stop_load.set()
            run.load = (run.load[0], now)
        if not producer.is_alive() and finished is None:
            finished = now
        if finished is not None and written >= run.produced:
            break
        if now > args.seconds + 3 * total / args.ceiling + 60:
            raise SystemExit(f"gave up: {written} of {run.produced} records written")
        time.sleep(max(0.0, 0.5 - (time.monotonic() - start - now)))
    stop_load.set()
    drain = run.samples[-1].t - (finished or 0.0)
    unique = len(
        {d["seq"] for d in events.find({}, {"seq": 1, "_id": 0})}
    )  # FerretDB: distinct is slow
    figure = Path("docs/peak-shaving-adaptive.png" if args.adaptive else "docs/peak-shaving.png")
    _plot(run, figure, args.ceiling, args.adaptive)
    print(json.dumps({
        "ceiling": args.ceiling, "highest_write_rate": round(_highest_rate(run.samples, 1.5)),
        "drain_seconds": round(drain, 1), "in_mongo": events.count_documents({}),
        "unique_ids": unique, "produced": run.produced, "figure": str(figure),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
