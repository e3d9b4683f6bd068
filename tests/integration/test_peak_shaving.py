"""The write ceiling on the real servers: a backlog drains no faster than the ceiling,
shared by several replicas, and a killed replica's share is taken up.

The evidence is what lands in MongoDB: its document count, sampled while the backlog
drains. Under a ceiling of C records/s (a token bucket holding B), N records cannot
all land in less than (N - B)/C seconds; a loaded machine only makes it longer, so
that lower bound is what is asserted, with every record landed exactly once. How close
to the ceiling the drain runs is for `make demo-peak` (highest_vs_ceiling)."""

from __future__ import annotations

import os
import signal
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
)
from tests.support.queues import QueuePair
from tests.support.waiting import wait_until

CEILING = 1000.0
PER_MESSAGE = 50
#: The first bulk's grant comes before its documents land (its write's latency), and the
#: grants made meanwhile are not in the span: a second covers that on a loaded machine.
FIRST_WRITE = 1.0


def landing_span(collection: Any, records: int, timeout: float) -> float:
    """Samples the count of `collection` until it holds `records` documents; returns a
    span the landing certainly lasted: from the end of the first count that saw a
    document to the start of the last count that saw fewer than all."""
    first_seen: float | None = None
    last_short = 0.0

    def landed() -> bool:
        nonlocal first_seen, last_short
        began = time.monotonic()
        count = collection.count_documents({})
        ended = time.monotonic()
        if count and first_seen is None:
            first_seen = ended
        if count >= records:
            return True
        if first_seen is not None:
            last_short = began
        return False

    assert wait_until(landed, timeout, 0.05), f"fewer than {records} landed in {timeout:.0f}s"
    assert first_seen is not None
    return last_short - first_seen


def shortest_span(records: float, ceiling: float, burst: float) -> float:
    """The least time `records` can take to land under `ceiling` records/s, a bucket of
    `burst` full at the start."""
    return (records - burst) / ceiling - FIRST_WRITE


def _backlog(sqs_client: Any, url: str, ledger: Ledger, records: int) -> None:
    send_bodies(sqs_client, url, pack(ledger.records(records), per_message=PER_MESSAGE))


@contextmanager
def _replicas(
    count: int, queue: QueuePair, mongo_uri: str, database: str
) -> Iterator[list[Service]]:
    settings = Settings(
        queue_urls=(queue.url,), mongo_uri=mongo_uri, database=database, metrics_port=0,
        wait_seconds=1, max_write_rate=CEILING, replica_heartbeat_seconds=1.0,
        writers=8,  # bulks under a ceiling are small: more writers ride out MongoDB's latency
    )  # fmt: skip
    services = []
    for _ in range(count):
        metrics = Metrics()
        gate = RateGate(Ceiling(CEILING), metrics)
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


def _backlogged(sqs_client: Any, make_queue: Any, records: int) -> tuple[QueuePair, Ledger]:
    """A queue holding `records` packed records, and their ledger."""
    queue: QueuePair = make_queue(visibility_timeout=30)
    ledger = Ledger("events")
    _backlog(sqs_client, queue.url, ledger, records)
    return queue, ledger


def test_one_replica_drains_a_backlog_at_the_ceiling(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str
) -> None:
    queue, ledger = _backlogged(sqs_client, make_queue, 6000)
    collection = mongo_db[ledger.collection]
    with _replicas(1, queue, mongo_uri, mongo_db.name) as (service,):
        span = landing_span(collection, 6000, 60)
        assert service.metrics.registry.get_sample_value("ingest_live_replicas") == 1
    least = shortest_span(6000, CEILING, Ceiling(CEILING).pool_burst)
    print(f"6000 records landed over {span:.1f}s (no less than {least:.1f}s)")
    assert span >= least, f"6000 records landed over {span:.1f}s, under {least:.1f}s"
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 6000)


def test_three_replicas_share_the_ceiling(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str
) -> None:
    """Until they have met on the board (their first heartbeat, 1 s) the two that
    started first may each write at the whole ceiling: that second is allowed for."""
    queue, ledger = _backlogged(sqs_client, make_queue, 20000)
    collection = mongo_db[ledger.collection]
    with _replicas(3, queue, mongo_uri, mongo_db.name) as services:
        gates = [s.gate for s in services]
        span = landing_span(collection, 20000, 90)
        assert all(isinstance(g, RateGate) and g.rate == CEILING / 3 for g in gates)
    burst = Ceiling(CEILING).pool_burst
    least = shortest_span(20000 - 3 * burst - 2 * CEILING, CEILING, 0)
    print(f"20000 records landed over {span:.1f}s (no less than {least:.1f}s)")
    assert span >= least, f"20000 records landed over {span:.1f}s, under {least:.1f}s"
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 20000)
    assert len({id(g) for g in gates}) == 3
    assert _board(mongo_db).live(3.0) == []  # clean stops deregister


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
        # The two left take up its share on the board (in MongoDB) ...
        assert wait_until(lambda: _shares(mongo_db) == [600.0] * 2, 30), _shares(mongo_db)
        # ... and no more: what remains lands no faster than the pool's ceiling.
        remaining = 24000 - collection.count_documents({})
        span = landing_span(collection, 24000, 60)
    least = shortest_span(remaining, 1200, 2 * Ceiling(1200).pool_burst)
    print(f"after the kill {remaining} records landed over {span:.1f}s (no less than {least:.1f}s)")
    assert span >= least, f"{remaining} records landed over {span:.1f}s, under {least:.1f}s"
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 24000)


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
        # MongoDB kept busy until the rate backs off. How far it backs off and how fast
        # it climbs back depend on how busy: make demo-peak's figures (the back-off and
        # the climb have deterministic tests in test_ratelimit.py).
        with load:
            assert wait_until(lambda: gate.rate < before, 30, 0.05), "no back-off under load"
        print(f"adaptive: {before:.0f}/s before the load, {gate.rate:.0f}/s under it")
        assert wait_until(lambda: collection.count_documents({}) >= 40000, 180)
    finally:
        service.stop(deadline_seconds=10)
        load.close()
    result = tally(collection, ledger)
    assert (result.lost, result.duplicates, result.stored) == (0, 0, 40000)
