"""The write ceiling on the real servers: a backlog drains at the ceiling and no
faster, shared by several replicas, and a killed replica's share is taken up.

The write rate is measured where it is decided: every bulk's grant time and size
(the moment the writer starts writing to MongoDB)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest.cli.connect import queue_service, queues, store
from ingest.cli.options import service_options
from ingest.flow.ceiling import Ceiling, RateGate
from ingest.flow.replicas import ReplicaRegistry
from ingest.metrics import Metrics
from ingest.pipeline.service import Service
from ingest.settings import RateMode, Settings
from ingest.sinks.base import REPLICAS_COLLECTION
from ingest.sinks.mongo import MongoReplicaBoard
from scripts.competing_load import CompetingLoad
from tests.support.harness import (
    Consumer,
    Ledger,
    pack,
    running,
    send_bodies,
    tally,
    wait_until,
)
from tests.support.queues import QueuePair

CEILING = 1000.0
PER_MESSAGE = 50


class RecordingGate(RateGate):
    """The real gate, noting when each bulk was let through and how big it was."""

    def __init__(self, ceiling: Ceiling, metrics: Metrics, grants: list[tuple[float, int]]):
        super().__init__(ceiling, metrics)
        self._grants = grants
        self._grants_lock = threading.Lock()

    def acquire(self, records: int) -> None:
        super().acquire(records)
        with self._grants_lock:
            self._grants.append((time.monotonic(), records))


def highest_one_second(grants: list[tuple[float, int]], since: float = 0.0) -> int:
    """Most records granted within any closed one-second window starting at or after `since`."""
    ordered = sorted(g for g in grants if g[0] >= since)
    best, total, end = 0, 0, 0
    for start in range(len(ordered)):
        while end < len(ordered) and ordered[end][0] <= ordered[start][0] + 1.0:
            total += ordered[end][1]
            end += 1
        best = max(best, total)
        total -= ordered[start][1]
    return best


def _backlog(sqs_client: Any, url: str, ledger: Ledger, records: int) -> None:
    send_bodies(sqs_client, url, pack(ledger.records(records), per_message=PER_MESSAGE))


@contextmanager
def _replicas(
    count: int, queue: QueuePair, mongo_uri: str, database: str, grants: list[tuple[float, int]]
) -> Iterator[list[Service]]:
    settings = Settings(
        queue_urls=(queue.url,), mongo_uri=mongo_uri, database=database, metrics_port=0,
        wait_seconds=1, max_write_rate=CEILING, replica_heartbeat_seconds=1.0,
        writers=8,  # bulks under a ceiling are small: more writers ride out MongoDB's latency
    )  # fmt: skip
    services = []
    for _ in range(count):
        metrics = Metrics()
        gate = RecordingGate(Ceiling(CEILING), metrics, grants)
        sink = store(settings)
        registry = ReplicaRegistry(sink.replica_board(), 1.0)
        sources = queues(settings, queue_service(settings, for_receiving=True))
        services.append(
            Service(
                service_options(settings),
                sources,
                sink,
                metrics=metrics,
                gate=gate,
                replicas=registry,
            )
        )
    try:
        for service in services:
            service.start()
        yield services
    finally:
        for service in services:
            service.stop(deadline_seconds=10)


def _check_ceiling(grants: list[tuple[float, int]], settled: float) -> None:
    """Within 5% of the ceiling in every second after `settled` (plus the burst before),
    and the whole backlog, tail included, drained at about the ceiling: 75% or better
    is a bound a loaded machine still meets (measured 93-97%; make demo-peak charts it)."""
    burst = Ceiling(CEILING).pool_burst
    highest = highest_one_second(grants)
    steady = highest_one_second(grants, since=settled)
    last = max(t for t, _ in grants)
    drain_rate = sum(n for t, n in grants if t >= settled) / (last - settled)
    print(f"ceiling {CEILING:.0f}: highest 1-s {highest}, after start {steady}, "
          f"drain {drain_rate:.0f}/s ({drain_rate / CEILING:.1%})")  # fmt: skip
    assert steady <= CEILING * 1.05
    assert highest <= CEILING * 1.05 + burst
    assert drain_rate >= 0.75 * CEILING


def _backlogged(
    sqs_client: Any, make_queue: Any, records: int
) -> tuple[QueuePair, Ledger, list[tuple[float, int]]]:
    """A queue holding `records` packed records, their ledger, and a list for the grants."""
    queue: QueuePair = make_queue(visibility_timeout=30)
    ledger = Ledger("events")
    _backlog(sqs_client, queue.url, ledger, records)
    return queue, ledger, []


def test_one_replica_drains_a_backlog_at_the_ceiling(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str
) -> None:
    queue, ledger, grants = _backlogged(sqs_client, make_queue, 6000)
    with _replicas(1, queue, mongo_uri, mongo_db.name, grants) as (service,):
        collection = mongo_db[ledger.collection]
        assert wait_until(lambda: collection.count_documents({}) >= 6000, 30)
        assert service.metrics.registry.get_sample_value("ingest_live_replicas") == 1
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 6000)
    _check_ceiling(grants, min(t for t, _ in grants) + 1.0)


def test_three_replicas_share_the_ceiling(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str
) -> None:
    queue, ledger, grants = _backlogged(sqs_client, make_queue, 20000)
    with _replicas(3, queue, mongo_uri, mongo_db.name, grants) as services:
        gates = [s.gate for s in services]
        assert wait_until(
            lambda: all(isinstance(g, RateGate) and g.rate == CEILING / 3 for g in gates), 10, 0.05
        )
        settled = time.monotonic()
        collection = mongo_db[ledger.collection]
        assert wait_until(lambda: collection.count_documents({}) >= 20000, 60)
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 20000)
    assert len({id(g) for g in gates}) == 3
    _check_ceiling(grants, settled)
    assert _board(mongo_db).live(3.0) == []  # clean stops deregister


def _count_rate(collection: Any, seconds: float) -> float:
    """Documents per second landing in MongoDB, each count timed at its query's midpoint."""

    def count() -> tuple[float, int]:
        before = time.monotonic()
        n = collection.count_documents({})
        return (before + time.monotonic()) / 2, n

    t1, n1 = count()
    time.sleep(seconds)
    t2, n2 = count()
    return (n2 - n1) / (t2 - t1)


def _board(db: Any) -> MongoReplicaBoard:
    return MongoReplicaBoard(db[REPLICAS_COLLECTION])


def _shares(db: Any) -> list[float]:
    return sorted(doc.get("ceiling") or 0.0 for doc in _board(db).live(3.0))


def test_a_killed_replicas_share_is_taken_up(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue: QueuePair = make_queue(visibility_timeout=5)
    ledger = Ledger("events")
    _backlog(sqs_client, queue.url, ledger, 24000)
    args = ["--max-write-rate", "1200", "--replica-heartbeat-seconds", "1"]
    consumers = [
        Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / f"c{i}.log", 5, args)
        for i in range(3)
    ]
    collection = mongo_db[ledger.collection]
    with running(consumers):
        assert wait_until(lambda: _shares(mongo_db) == [400.0] * 3, 20), _shares(mongo_db)
        os.kill(consumers[0].pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_until(lambda: _shares(mongo_db) == [600.0] * 2, 30), _shares(mongo_db)
        taken_up = time.monotonic() - killed
        pool_rate = _count_rate(collection, seconds=3.0)
        print(f"share taken up {taken_up:.1f}s after SIGKILL; pool writes {pool_rate:.0f}/s")
        assert 0.8 * 1200 <= pool_rate <= 1.1 * 1200
        assert wait_until(lambda: collection.count_documents({}) >= 24000, 40)
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 24000)
    assert taken_up < 30


def test_adaptive_ceiling_backs_off_under_load_and_climbs_back(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str
) -> None:
    cap = 4000.0  # near what this FerretDB takes from one consumer: latency is the limit
    queue: QueuePair = make_queue(visibility_timeout=30)
    ledger = Ledger("events")
    _backlog(sqs_client, queue.url, ledger, 40000)  # a backlog that outlasts the 10 s load
    settings = Settings(
        queue_urls=(queue.url,), mongo_uri=mongo_uri, database=mongo_db.name, metrics_port=0,
        wait_seconds=1, max_write_rate=cap, write_rate=RateMode.ADAPTIVE,
        target_write_latency=0.05, writers=8,
    )  # fmt: skip
    sources = queues(settings, queue_service(settings, for_receiving=True))
    service = Service(service_options(settings), sources, store(settings))
    collection = mongo_db[ledger.collection]
    load = CompetingLoad(mongo_uri, f"{mongo_db.name}_load")
    try:
        service.start()
        gate = service.gate
        assert isinstance(gate, RateGate)
        assert wait_until(lambda: collection.count_documents({}) >= 4000, 20)
        before = gate.rate
        lowest = before
        with load:
            ends = time.monotonic() + 10
            while time.monotonic() < ends:
                lowest = min(lowest, gate.rate)
                time.sleep(0.1)
        # How fast it climbs back depends on how busy MongoDB still is: a timing for
        # make demo-peak; the climb itself has a deterministic test (test_ratelimit.py).
        print(f"adaptive: {before:.0f}/s before the load, lowest {lowest:.0f}/s under it")
        assert lowest <= 0.75 * before  # backed off
        assert wait_until(lambda: collection.count_documents({}) >= 40000, 180)
    finally:
        service.stop(deadline_seconds=10)
        load.close()
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 40000)
