"""Freshness you can see from the operator's side: the drain time that `ingest status`
reads from the replica board, and the ObjectId read from a raw document without
inflating it (for the end-to-end samples). The queue-wait histogram is the receive
stage's (test_receive.py), the end-to-end samples the write stage's (test_write.py)."""

from __future__ import annotations

import bson
from bson import ObjectId
from bson.raw_bson import RawBSONDocument

from ingest.queues.memory import MemoryQueue
from ingest.sinks.memory import MemorySink
from ingest.tools.status import collect, drain_estimate, duration, render
from producer import wire


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
