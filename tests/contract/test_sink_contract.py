"""The same outcomes from the in-memory sink and from MongoDB (FerretDB here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId

from ingest.errors import SinkUnavailable
from ingest.sinks.base import (
    DUPLICATE,
    WRITTEN,
    DocumentSink,
    DocumentStore,
    OutcomeKind,
    WriteMode,
)
from ingest.sinks.memory import MemorySink, memory_key
from ingest.sinks.mongo import MongoSink
from producer import wire

SinkFactory = Callable[
    [WriteMode], tuple[DocumentStore, Callable[[str, Any], dict[str, Any] | None]]
]


@pytest.fixture(params=["memory", "mongo"])
def make_sink(request: pytest.FixtureRequest) -> SinkFactory:
    if request.param == "memory":

        def memory(mode: WriteMode) -> tuple[DocumentStore, Callable[[str, Any], Any]]:
            sink = MemorySink(mode)
            return sink, lambda coll, _id: sink.collections[coll].get(memory_key(_id))

        return memory
    db = request.getfixturevalue("mongo_db")

    def mongo(mode: WriteMode) -> tuple[DocumentStore, Callable[[str, Any], Any]]:
        return MongoSink(db, mode), lambda coll, _id: db[coll].find_one({"_id": _id})

    return mongo


def record(collection: str, **fields: Any) -> wire.Record:
    document = {"_id": fields.pop("_id", None) or ObjectId(), **fields}
    return wire.decode_line(wire.encode_record(collection, document))


def test_insert_once_first_write_wins_and_duplicates_collapse(make_sink: SinkFactory) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    first = record("events", n=1)
    again = record("events", _id=first.document["_id"], n=2)
    other = record("audit", n=3)
    assert sink.write([first, other]) == [WRITTEN, WRITTEN]
    assert sink.write([again]) == [DUPLICATE]
    assert find("events", first.document["_id"])["n"] == 1  # type: ignore[index]
    assert find("audit", other.document["_id"])["n"] == 3  # type: ignore[index]


def test_duplicates_inside_one_batch_collapse(make_sink: SinkFactory) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    first = record("events", n=1)
    twin = record("events", _id=first.document["_id"], n=1)
    assert sink.write([first, twin]) == [WRITTEN, DUPLICATE]
    assert find("events", first.document["_id"]) is not None


def test_replace_mode_last_write_wins(make_sink: SinkFactory) -> None:
    sink, find = make_sink(WriteMode.REPLACE)
    first = record("events", n=1, keep="x")
    later = record("events", _id=first.document["_id"], n=2)
    sink.write([first])
    assert sink.write([later]) == [WRITTEN]
    stored = find("events", first.document["_id"])
    assert stored is not None and stored["n"] == 2 and "keep" not in stored


def test_replace_mode_in_one_batch_keeps_arrival_order(make_sink: SinkFactory) -> None:
    sink, find = make_sink(WriteMode.REPLACE)
    first = record("events", n=1)
    later = record("events", _id=first.document["_id"], n=2)
    assert [o.kind for o in sink.write([first, later])] == [OutcomeKind.WRITTEN] * 2
    assert find("events", first.document["_id"])["n"] == 2  # type: ignore[index]


def test_merge_mode_sets_fields(make_sink: SinkFactory) -> None:
    sink, find = make_sink(WriteMode.MERGE)
    first = record("events", a=1, b=1)
    patch = record("events", _id=first.document["_id"], b=2, c=3)
    sink.write([first])
    assert sink.write([patch]) == [WRITTEN]
    stored = find("events", first.document["_id"])
    assert stored is not None and (stored["a"], stored["b"], stored["c"]) == (1, 2, 3)


def test_types_survive_the_write(make_sink: SinkFactory) -> None:
    import datetime

    from bson import Binary

    sink, find = make_sink(WriteMode.INSERT_ONCE)
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000)
    r = record("events", at=at, blob=Binary(b"\x00\x01"), big=2**40, f=1.5, none=None)
    sink.write([r])
    stored = find("events", r.document["_id"])
    assert stored is not None
    assert stored["at"].replace(tzinfo=None) == at
    assert (stored["f"], stored["none"]) == (1.5, None)
    assert bytes(stored["blob"]) == b"\x00\x01"
    assert stored["big"] == 2**40


def _on_ferretdb(sink: DocumentSink) -> bool:
    return isinstance(sink, MongoSink) and sink.is_ferretdb


def test_decimal128_is_stored_except_on_ferretdb(make_sink: SinkFactory) -> None:
    """FerretDB 1.24 cannot store Decimal128: it drops the connection, failing the whole
    bulk as if the server were down. The server still answers a ping, so the bulk is
    bisected and the record alone is rejected; the good records beside it are written."""
    from bson import Decimal128

    sink, find = make_sink(WriteMode.INSERT_ONCE)
    plain = [record("events", n=n) for n in range(20)]
    priced = record("events", price=Decimal128("9.99"))
    outcomes = sink.write([*plain[:7], priced, *plain[7:]])
    stored = {OutcomeKind.WRITTEN, OutcomeKind.DUPLICATE}  # see the NUL test below
    assert all(o.kind in stored for o in outcomes[:7] + outcomes[8:])
    if _on_ferretdb(sink):
        assert outcomes[7].kind is OutcomeKind.REJECTED
        assert "closed the connection" in outcomes[7].reason and "FerretDB" in outcomes[7].reason
        assert find("events", priced.document["_id"]) is None
    else:
        assert outcomes[7] == WRITTEN
        assert find("events", priced.document["_id"])["price"] == Decimal128("9.99")  # type: ignore[index]


@pytest.mark.parametrize("ordered", [False, True])
def test_a_nul_in_a_string_is_stored_except_on_ferretdb(
    make_sink: SinkFactory, ordered: bool
) -> None:
    """MongoDB stores a NUL inside a string value; FerretDB answers the whole insert with
    PostgreSQL's error 22P05. That record alone is rejected with the server's reason."""
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    plain = [record("events", n=n) for n in range(30)]
    nul = record("events", s="a\x00b")
    write = sink.write_ordered if ordered else sink.write
    outcomes = write([*plain[:11], nul, *plain[11:]])
    # FerretDB applies the inserts before the refused one: re-written, they are duplicates.
    stored = {OutcomeKind.WRITTEN, OutcomeKind.DUPLICATE}
    assert all(o.kind in stored for o in outcomes[:11] + outcomes[12:])
    if _on_ferretdb(sink):
        assert outcomes[11].kind is OutcomeKind.REJECTED
        assert outcomes[11].reason.startswith("refused by the database (error 1 InternalError)")
        assert "22P05" in outcomes[11].reason and ".go:" not in outcomes[11].reason
    else:
        assert outcomes[11] == WRITTEN
        assert find("events", nul.document["_id"])["s"] == "a\x00b"  # type: ignore[index]
    assert all(find("events", r.document["_id"]) is not None for r in plain)


def test_an_integer_beyond_64_bits_is_rejected_alone_with_a_reason(make_sink: SinkFactory) -> None:
    sink, _ = make_sink(WriteMode.INSERT_ONCE)
    big = wire.decode_line('{"c":"events","d":{"_id":"big","v":1180591620717411303424}}')
    outcomes = sink.write([record("events", n=1), big, record("events", n=2)])
    assert [o.kind for o in outcomes] == [
        OutcomeKind.WRITTEN,
        OutcomeKind.REJECTED,
        OutcomeKind.WRITTEN,
    ]
    assert outcomes[1].reason == "integer 2**70 does not fit in 64 bits"


@pytest.mark.parametrize("mode", [WriteMode.INSERT_ONCE, WriteMode.REPLACE, WriteMode.MERGE])
def test_ordered_writes_apply_in_order(make_sink: SinkFactory, mode: WriteMode) -> None:
    sink, find = make_sink(mode)
    oid = ObjectId()
    versions = [record("events", _id=oid, v=v, **{f"f{v}": v}) for v in (1, 2, 3)]
    outcomes = sink.write_ordered([*versions, record("audit", v=9)])
    assert all(o.settled for o in outcomes)
    stored = find("events", oid)
    assert stored is not None
    if mode is WriteMode.INSERT_ONCE:
        assert stored["v"] == 1 and [o.kind for o in outcomes[1:3]] == [OutcomeKind.DUPLICATE] * 2
    elif mode is WriteMode.REPLACE:
        assert stored["v"] == 3 and "f1" not in stored
    else:
        assert (stored["v"], stored["f1"], stored["f2"], stored["f3"]) == (3, 1, 2, 3)


def _down(kind: str) -> DocumentSink:
    if kind == "memory":
        sink = MemorySink()
        sink.unavailable = True
        return sink
    from pymongo import MongoClient

    closed = MongoClient(
        "mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=300, connectTimeoutMS=300
    )
    return MongoSink(closed["t"], where="MongoDB at 127.0.0.1:1")


@pytest.mark.parametrize("kind", ["memory", "mongo"])
def test_a_store_that_does_not_answer_is_an_outage_not_a_bad_record(kind: str) -> None:
    sink = _down(kind)
    for write in (sink.write, sink.write_ordered):
        with pytest.raises(SinkUnavailable):
            write([record("events", n=1), record("events", n=2)])
    with pytest.raises(SinkUnavailable):
        sink.ping()


def test_operator_views_of_the_store(make_sink: SinkFactory) -> None:
    store, _ = make_sink(WriteMode.INSERT_ONCE)
    store.write([record("events", n=n) for n in range(3)] + [record("audit", n=1)])
    assert "fresh" in store.prepare(["fresh", "events"])
    store.check_write()
    counts = store.collection_counts()
    assert counts["events"] == 3 and counts["audit"] == 1 and counts["fresh"] == 0
    assert not [name for name in counts if name.startswith("_ingest_")]


def test_the_replica_board_sees_who_checked_in_lately(make_sink: SinkFactory) -> None:
    store, _ = make_sink(WriteMode.INSERT_ONCE)
    board = store.replica_board()
    board.check_in("a", {"ceiling": 500.0})
    board.check_in("b", {"ceiling": 500.0})
    assert [(r["_id"], r["ceiling"]) for r in board.live(30.0)] == [("a", 500.0), ("b", 500.0)]
    board.leave("a")
    assert [r["_id"] for r in board.live(30.0)] == ["b"]
    assert "_ingest_replicas" not in store.collection_counts()
