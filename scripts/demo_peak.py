"""Peak shaving you can see: a burst at five times the ceiling goes into SQS, the
consumer writes it into MongoDB at the ceiling. Samples every 0.5 s and draws
docs/peak-shaving.png (produced/s, written/s, queue depth; --adaptive also the
consumer's ceiling while a load generator slows MongoDB). Last stdout line: JSON.
The rates the tests do not assert (a loaded machine moves them) are here:
highest_vs_ceiling (the highest 1-s write rate over the ceiling, about 1, not above
1.05) and, with --adaptive, backed_off_to_pct (the lowest rate under the load).

    make demo-peak              # fixed ceiling
    .venv/bin/python -m scripts.demo_peak --adaptive --ceiling 4000 --burst-factor 2
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

from ingest.settings import parse_seconds
from producer import wire
from scripts.competing_load import CompetingLoad

INGEST = Path(sys.executable).with_name("ingest")
PER_MESSAGE = 50


@dataclass
class Sample:
    t: float
    produced: int
    written: int
    depth: int
    ceiling: float
    bulks: int = 0  # bulk writes so far
    slow: int = 0  # of which over the target latency


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


def _consumer(port: int, target: float) -> dict[str, float]:
    """The consumer's ceiling, records written and bulk latencies, from its /metrics
    (counting documents in FerretDB takes seconds once there are many). `target` must
    be one of the latency histogram's bucket bounds."""
    wanted = {"ingest_write_ceiling_records_per_second": "ceiling",
              "ingest_records_written_total": "written",
              "ingest_bulk_write_seconds_count": "bulks",
              f'ingest_bulk_write_seconds_bucket{{le="{target}"}}': "fast"}  # fmt: skip
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


def _windows(
    samples: list[Sample], since: float, until: float, length: float = 1.0
) -> list[tuple[Sample, Sample]]:
    """Windows of `length` seconds of samples, starting at each sample in [since, until]."""
    out = []
    for i, a in enumerate(samples):
        if not since <= a.t <= until:
            continue
        b = next((b for b in samples[i + 1 :] if b.t - a.t >= length), None)
        if b is not None and b.t <= until + 0.5:
            out.append((a, b))
    return out


def _slow_share(a: Sample, b: Sample) -> float:
    """Share of the bulks between two samples over the target: p99 <= target iff <= 1%."""
    return (b.slow - a.slow) / max(1, b.bulks - a.bulks)


def _adaptive_figures(run: Run) -> dict[str, float | bool | None]:
    """The p99 bulk latency during the load, after the first 10 s of it; when it was
    last over the target over a 5 s window; and the write rate after the load against
    the rate before it."""
    assert run.load is not None
    start, end = run.load
    settled = [x for x in run.samples if start + 10.0 <= x.t <= end]
    slow_after_10s = _slow_share(settled[0], settled[-1]) if len(settled) > 1 else None
    over = [b.t for a, b in _windows(run.samples, start, end, 5.0) if _slow_share(a, b) > 0.01]
    before = max(map(_write_rate, _windows(run.samples, start - 6.0, start)), default=0.0)
    after = [w for w in _windows(run.samples, end, end + 20.0) if w[1].depth > 0]
    recovered = max(map(_write_rate, after), default=0.0)
    lowest = min(map(_write_rate, _windows(run.samples, start, end)), default=0.0)
    climbed = next((w[0].t - end for w in after if _write_rate(w) >= 0.8 * before), None)
    return {
        "load_seconds": round(end - start, 1),
        "slow_bulks_pct_after_10s_of_load": None if slow_after_10s is None else round(100 * slow_after_10s, 2),
        "p99_under_target_after_10s_of_load": None if slow_after_10s is None else slow_after_10s <= 0.01,
        "p99_5s_window_last_over_target_at": round(max(over) - start, 1) if over else None,
        "rate_before_load": round(before), "rate_after_load": round(recovered),
        "rate_lowest_under_load": round(lowest),
        "backed_off_to_pct": round(100 * lowest / before, 1) if before else None,
        "rate_recovered_pct": round(100 * recovered / before, 1) if before else None,
        "seconds_to_80pct_after_load": None if climbed is None else round(climbed, 1),
    }  # fmt: skip


def _write_rate(window: tuple[Sample, Sample]) -> float:
    a, b = window
    return (b.written - a.written) / (b.t - a.t)


def _highest_rate(samples: list[Sample], skip: float) -> float:
    """Highest written/s over any one-second window (samples 0.5 s apart), after `skip` s."""
    return max(map(_write_rate, _windows(samples, skip, samples[-1].t)), default=0.0)


def _plot(run: Run, path: Path, ceiling: float, adaptive: bool, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = run.samples
    t = [x.t for x in s]

    def rate(attr: str) -> list[float]:
        pairs = itertools.pairwise(s)
        return [0.0] + [(getattr(b, attr) - getattr(a, attr)) / (b.t - a.t) for a, b in pairs]

    if adaptive:
        fig, (ax, low) = plt.subplots(
            2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
        _plot_latency(low, run, target)
    else:
        fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(t, rate("produced"), label="produced records/s", color="tab:orange")
    ax.plot(t, rate("written"), label="written to MongoDB records/s", color="tab:blue")
    if adaptive:
        ax.plot(t, [x.ceiling for x in s], "--", label="consumer's ceiling", color="tab:green")
        if run.load:
            ax.axvspan(*run.load, color="red", alpha=0.08, label="MongoDB under other load")
    else:
        ax.axhline(ceiling, ls="--", color="tab:green", label=f"ceiling {ceiling:.0f}/s")
    (low if adaptive else ax).set_xlabel("seconds")
    ax.set_ylabel("records / second")
    right = ax.twinx()
    right.plot(t, [x.depth for x in s], color="tab:gray", alpha=0.6, label="SQS depth (messages)")
    right.set_ylabel("messages in SQS")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    ax.set_title(
        "Adaptive ceiling: the consumer follows MongoDB's latency"
        if adaptive
        else "Peak shaving: SQS takes the burst, MongoDB sees the ceiling"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def _plot_latency(ax: Any, run: Run, target: float) -> None:
    """Share of the consumer's bulk writes over the target, per second: its p99 is
    under the target while this stays under 1%."""
    windows = _windows(run.samples, 0.0, run.samples[-1].t)
    share = [100 * _slow_share(a, b) for a, b in windows]
    ax.plot(
        [b.t for _, b in windows],
        share,
        color="tab:red",
        label=f"bulks over {target * 1000:.0f} ms",
    )
    ax.axhline(1.0, ls="--", color="black", lw=0.8, label="1% (p99 at the target)")
    if run.load:
        ax.axvspan(*run.load, color="red", alpha=0.08)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylabel("% of bulks")
    ax.legend(loc="upper right")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ceiling", type=float, default=1000.0)
    p.add_argument("--burst-factor", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--adaptive", action="store_true")
    p.add_argument("--target-latency", default="50ms")
    p.add_argument("--load-at", type=float, default=10.0, help="adaptive: seconds in, load starts")
    p.add_argument("--load-seconds", type=float, default=20.0)
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
    target = parse_seconds(args.target_latency)
    load = CompetingLoad(uri, f"{database}_load")
    time.sleep(3.0)  # the consumer starts
    producer = threading.Thread(
        target=_produce, args=(sqs, url, args.ceiling * args.burst_factor, args.seconds, run)
    )
    start = time.monotonic()
    producer.start()
    total = int(args.ceiling * args.burst_factor * args.seconds)
    finished: float | None = None
    while True:
        if consumer.poll() is not None:
            raise SystemExit(f"the consumer exited ({consumer.returncode}); see its log in /tmp")
        now = time.monotonic() - start
        seen = _consumer(args.port, target)
        written = int(seen.get("written", 0))
        ceiling = seen.get("ceiling", float("nan"))
        bulks = int(seen.get("bulks", 0))
        slow = bulks - int(seen.get("fast", 0))
        sample = Sample(now, run.produced, written, _depth(sqs, url), ceiling, bulks, slow)
        run.samples.append(sample)
        if args.adaptive and not load.started and now >= args.load_at:  # slow MongoDB mid-run
            load.start()
            run.load = (now, now)
        if run.load and not load.stopped and now - run.load[0] >= args.load_seconds:
            load.stop()
            run.load = (run.load[0], now)
        if not producer.is_alive() and finished is None:
            finished = now
        if finished is not None and written >= run.produced:
            break
        if now > args.seconds + 3 * total / args.ceiling + 60:
            raise SystemExit(f"gave up: {written} of {run.produced} records written")
        time.sleep(max(0.0, 0.5 - (time.monotonic() - start - now)))
    load.close()
    drain = run.samples[-1].t - (finished or 0.0)
    unique = len(
        {d["seq"] for d in events.find({}, {"seq": 1, "_id": 0})}
    )  # FerretDB: distinct is slow
    figure = Path("docs/peak-shaving-adaptive.png" if args.adaptive else "docs/peak-shaving.png")
    _plot(run, figure, args.ceiling, args.adaptive, target)
    result = {
        "ceiling": args.ceiling, "highest_write_rate": round(_highest_rate(run.samples, 1.5)),
        "highest_vs_ceiling": round(_highest_rate(run.samples, 1.5) / args.ceiling, 3),
        "drain_seconds": round(drain, 1), "in_mongo": events.count_documents({}),
        "unique_ids": unique, "produced": run.produced, "figure": str(figure),
    }  # fmt: skip
    if args.adaptive and run.load:
        result |= {"target_latency_seconds": target} | _adaptive_figures(run)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
