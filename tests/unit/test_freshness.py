"""Queue wait you can see, on the in-memory seams: the queue-wait histogram from SQS's
SentTimestamp, end-to-end samples that leave clock skew out, and the drain time that
`ingest status` reads from the replica board."""

from __future__ import annotations

import datetime
import time

import bson
from bson import ObjectId
from bson.raw_bson import RawBSONDocument

from ingest.flow.breaker import SinkBreaker
from ingest.flow.replicas import ReplicaRegistry, SharedCeiling
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.receive import Poller, ReceiveOptions, Wiring
from ingest.pipeline.write import BatchWriter
from ingest.queues.memory import MemoryQueue
from ingest.sinks.memory import MemoryReplicaBoard, MemorySink
from ingest.tools.status import collect, drain_estimate, duration, render
from producer import wire


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------- queue wait


def test_the_queue_wait_is_measured_from_sqs_send_time_at_receive() -> None:
    queue = MemoryQueue("memory://q")
    for n in range(3):
        queue.send(f"m{n}")
    sent = max(m.sent_at for m in queue._messages.values())
    metrics = Metrics()
    wiring = Wiring(Inbox(4), Outbox(), InFlight(), SinkBreaker(), metrics,
                    ReceiveOptions(wait_seconds=0), clock=lambda: sent + 42.0)  # fmt: skip
    assert Poller(queue, wiring, "p").poll_once() == 3
    assert sample(metrics, "ingest_queue_wait_seconds_count") == 3
    assert 3 * 42.0 <= sample(metrics, "ingest_queue_wait_seconds_sum") <= 3 * 42.1
    assert sample(metrics, "ingest_queue_wait_seconds_bucket", le="30.0") == 0
    assert sample(metrics, "ingest_queue_wait_seconds_bucket", le="60.0") == 3


def test_a_consumer_clock_behind_sqs_counts_zero_not_negative() -> None:
    queue = MemoryQueue("memory://q")
    queue.send("m")
    metrics = Metrics()
    wiring = Wiring(Inbox(4), Outbox(), InFlight(), SinkBreaker(), metrics,
                    ReceiveOptions(wait_seconds=0), clock=lambda: 0.0)  # fmt: skip
    Poller(queue, wiring, "p").poll_once()
    assert sample(metrics, "ingest_queue_wait_seconds_count") == 1
    assert sample(metrics, "ingest_queue_wait_seconds_sum") == 0.0


# ---------------------------------------------------------------- end to end


def _batch_from(oid: ObjectId, now: float) -> tuple[Metrics, float]:
    metrics = Metrics()
    writer = BatchWriter(MemorySink(), metrics, SinkBreaker(), clock=lambda: now)
    body = wire.encode_record("events", {"_id": oid, "n": 1})
    from ingest.queues.base import Message

    writer.process([Message("memory://q", "m", "r", body)])
    return metrics, sample(metrics, "ingest_end_to_end_seconds_count")


def test_end_to_end_samples_from_the_future_or_long_ago_count_as_skew() -> None:
    now = time.time()
    seventy_one = ObjectId.from_datetime(datetime.datetime(1971, 6, 1, tzinfo=datetime.UTC))
    old, observed = _batch_from(seventy_one, now)
    assert (
        observed == 0
        and sample(old, "ingest_end_to_end_skewed_samples_total", direction="old") == 1
    )
    ahead = ObjectId.from_datetime(datetime.datetime.fromtimestamp(now + 3600, datetime.UTC))
    future, observed = _batch_from(ahead, now)
    assert observed == 0
    assert sample(future, "ingest_end_to_end_skewed_samples_total", direction="future") == 1
    fresh, observed = _batch_from(ObjectId.from_datetime(
        datetime.datetime.fromtimestamp(now - 7, datetime.UTC)), now)  # fmt: skip
    assert observed == 1 and 6.0 <= sample(fresh, "ingest_end_to_end_seconds_sum") <= 8.0
    assert sample(fresh, "ingest_end_to_end_skewed_samples_total", direction="old") == 0
    # Both series exist before any skew, so a dashboard panel has data from the start.
    assert sample(fresh, "ingest_end_to_end_skewed_samples_total", direction="future") == 0


def test_the_object_id_of_a_raw_document_is_read_without_inflating_it() -> None:
    oid = ObjectId()
    raw = bson.encode({"_id": oid, "big": "x" * 10_000})
    record = wire.Record("events", RawBSONDocument(raw), raw)
    assert wire.record_id(record) == oid
    assert record.document._RawBSONDocument__inflated_doc is None  # type: ignore[attr-defined]
    # An _id that is not first is found the slow way, by reading the document.
    late = bson.encode({"n": 1, "_id": oid})
    assert wire.record_id(wire.Record("events", RawBSONDocument(late), late)) == oid


# ------------------------------------------------------------------- status


def _queue_with(visible: int) -> MemoryQueue:
    queue = MemoryQueue("memory://q")
    for n in range(visible):
        queue.send(f"m{n}")
    return queue


def test_status_says_how_long_the_backlog_takes_at_the_write_rate_and_the_ceiling() -> None:
    queue, store = _queue_with(80), MemorySink(database="app")
    board = store.replica_board()
    for name, rate in (("a", 100.0), ("b", 300.0)):
        board.check_in(name, {"write_rate": rate, "records_per_message": 10.0,
                              "ceiling": 500.0, "pool_ceiling": 1000.0, "mode": "fixed"})  # fmt: skip
    report = collect(lambda: {queue.url: queue}, store, board, 15.0)
    assert report["drain"] == {
        "backlog_messages": 80, "records_per_message": 10.0, "backlog_records": 800,
        "write_rate": 400.0, "seconds_at_write_rate": 2.0, "ceiling": 1000.0,
        "seconds_at_ceiling": 0.8,
    }  # fmt: skip
    assert (
        "backlog 80 messages (about 800 records at 10.0 a message): drains in 2s at the"
        " current 400 records/s; 1s at the ceiling of 1000 records/s"
    ) in render(report)


def test_without_a_ceiling_or_a_writing_replica_status_says_so() -> None:
    queue = _queue_with(5)
    quiet = drain_estimate({queue.url: {"visible": 5, "in_flight": 0, "delayed": 0}},
                           [{"write_rate": 0.0, "pool_ceiling": None}])  # fmt: skip
    assert quiet["seconds_at_write_rate"] is None and quiet["seconds_at_ceiling"] is None
    store = MemorySink()
    report = collect(lambda: {queue.url: queue}, store, store.replica_board(), 15.0)
    assert "no replica is writing: it does not drain" in render(report)
    empty = drain_estimate({"q": {"visible": 0, "in_flight": 0, "delayed": 0}}, [])
    assert empty["seconds_at_write_rate"] == 0.0
    assert [duration(s) for s in (4, 185, 7800, 273600)] == ["4s", "3m05s", "2h10m", "3d04h"]


def test_replicas_without_a_ceiling_check_in_with_their_write_rate() -> None:
    board = MemoryReplicaBoard()
    handled = [0]
    check_in = SharedCeiling(ReplicaRegistry(board, 5.0, me="solo"), None,
                             handled=lambda: handled[0], per_message=lambda: 25.0)  # fmt: skip
    check_in.beat()
    handled[0] = 500
    time.sleep(0.05)
    check_in.beat()
    (seen,) = board.live(30.0)
    assert seen["_id"] == "solo" and seen["records_per_message"] == 25.0
    assert seen["write_rate"] > 0 and "ceiling" not in seen and "pool_ceiling" not in seen
