"""The same outcomes from the in-memory sink and from MongoDB (FerretDB here)."""

from __future__ import annotations

import datetime
import hashlib
import math
from typing import Any

import bson
import pytest
from bson import ObjectId

from ingest.errors import ConfigError, SinkRefused, SinkUnavailable
from ingest.sinks.base import (
    DUPLICATE,
    WRITTEN,
    DocumentSink,
    DocumentStore,
    Outcome,
    OutcomeKind,
    Retention,
    WriteMode,
)
from ingest.sinks.memory import MemorySink
from ingest.sinks.mongo import MongoSink
from ingest.sinks.mongo_bulk import failed_updates_readable
from producer import wire
from tests.support.sink_contract import SinkFactory, make_sink, record

__all__ = ["make_sink"]  # the fixture


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


@pytest.mark.parametrize("version_field", [None, "v"])
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_merge_refuses_a_dotted_field_name_rather_than_nest_it(
    make_sink: SinkFactory, version_field: str | None, ordered: bool
) -> None:
    """$set would store {"a.b": 1} as {"a": {"b": 1}}: the record is refused alone,
    with a reason, and nothing of it is stored; its neighbours are written."""
    sink, find = make_sink(WriteMode.MERGE, version_field=version_field)
    before = record("events", v=1, x=1)
    dotted = {"_id": ObjectId(), "v": 1, "a.b": 1}
    batch = [before, wire.decode_line(wire.encode_record("events", dotted)),
             record("events", v=1, y=2)]  # fmt: skip
    outcomes = sink.write_ordered(batch) if ordered else sink.write(batch)
    assert [o.kind for o in outcomes] == [OutcomeKind.WRITTEN, OutcomeKind.REJECTED,
                                          OutcomeKind.WRITTEN]  # fmt: skip
    assert outcomes[1].reason.startswith("field 'a.b' has a '.': the merge write mode sets")
    assert find("events", dotted["_id"]) is None
    assert find("events", batch[2].document["_id"]) is not None
    alone = [batch[1]]  # nothing else to write: no empty bulk sent
    outcomes = sink.write_ordered(alone) if ordered else sink.write(alone)
    assert [o.kind for o in outcomes] == [OutcomeKind.REJECTED]


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
    # `ingest init` lists what prepare returns: the pipeline's own collections are not in it.
    assert not [name for name in store.prepare(["fresh"]) if name.startswith("_ingest_")]
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


# ------------------------------------------------------ version-guarded writes

GUARDED = [WriteMode.REPLACE, WriteMode.MERGE]


def kinds(outcomes: list[Outcome]) -> list[str]:
    return [o.kind.value for o in outcomes]


def guarded_kinds(sink: DocumentStore, outcomes: list[Outcome], expected: list[str]) -> None:
    """`expected`, except where MongoDB's branch runs on a server whose bulk replies it
    cannot read (FerretDB 1.24): there a statement applied before the server stopped
    at a refused one is sent again on its own and found applied: a duplicate, or stale
    when a later one of the batch went over it, not written. Each is settled; the
    stored state is checked apart."""
    got = kinds(outcomes)
    if isinstance(sink, MongoSink) and sink.guarded_in_bulk and not _reads_bulks(sink):
        applied_before = ("duplicate", "stale")
        got = ["written" if g in applied_before and e == "written" else g
               for g, e in zip(got, expected, strict=True)]  # fmt: skip
    assert got == expected


def _reads_bulks(sink: MongoSink) -> bool:
    return failed_updates_readable(sink._db["_ingest_check"])


@pytest.mark.parametrize("mode", GUARDED)
def test_a_version_guard_writes_only_higher_versions(
    make_sink: SinkFactory, mode: WriteMode
) -> None:
    sink, find = make_sink(mode, version_field="v")
    oid = ObjectId()
    assert sink.write([record("events", _id=oid, v=2, n=2)]) == [WRITTEN]
    older, same, newer = (record("events", _id=oid, v=v, n=v) for v in (1, 2, 3))
    assert kinds(sink.write([older])) == ["stale"]
    assert sink.write([same]) == [DUPLICATE]  # a redelivery of what is stored
    assert sink.write([newer]) == [WRITTEN]
    assert find("events", oid)["n"] == 3  # type: ignore[index]
    assert kinds(sink.write([older, same])) == ["stale", "stale"]
    assert find("events", oid)["v"] == 3  # type: ignore[index]


@pytest.mark.parametrize("mode", GUARDED)
def test_a_bulk_of_new_versioned_records_is_written_and_is_no_outage(
    make_sink: SinkFactory, mode: WriteMode
) -> None:
    """Every record new: the inserts take them all, and no empty bulk of guarded upserts
    follows (pymongo refuses one; on MongoDB's branch that once opened the breaker)."""
    sink, find = make_sink(mode, version_field="v")
    batch = [record("events", v=1, n=n) for n in range(5)]
    assert sink.write(batch) == [WRITTEN] * 5
    assert all(find("events", r.document["_id"]) is not None for r in batch)


@pytest.mark.parametrize("mode", GUARDED)
@pytest.mark.parametrize("ordered", [False, True])
def test_shuffled_versions_in_one_batch_end_at_the_highest(
    make_sink: SinkFactory, mode: WriteMode, ordered: bool
) -> None:
    sink, find = make_sink(mode, version_field="v")
    oid, other = ObjectId(), ObjectId()
    batch = [record("events", _id=oid, v=v, n=v) for v in (3, 1, 5, 2, 4)]
    batch.insert(2, record("events", _id=other, v=1))
    outcomes = (sink.write_ordered if ordered else sink.write)(batch)
    expected = ["written", "stale", "written", "written", "stale", "stale"]
    guarded_kinds(sink, outcomes, expected)
    assert (find("events", oid)["v"], find("events", oid)["n"]) == (5, 5)  # type: ignore[index]


@pytest.mark.parametrize("mode", GUARDED)
def test_records_without_a_comparable_version_are_rejected_with_a_reason(
    make_sink: SinkFactory, mode: WriteMode
) -> None:
    sink, find = make_sink(mode, version_field="v")
    bad = [
        record("events", n=1),
        record("events", v="7"),
        record("events", v=True),
        record("events", v=None),
        record("events", v=float("nan")),
        record("events", v={"major": 1}),
    ]
    good = record("events", v=1)
    outcomes = sink.write([*bad, good])
    assert kinds(outcomes) == ["rejected"] * 6 + ["written"]
    assert [o.reason for o in outcomes[:6]] == [
        "the record has no version: field v is missing",
        "version field v must be a number or a date, not a string",
        "version field v must be a number or a date, not a boolean",
        "version field v must be a number or a date, not null",
        "version field v must be a number or a date, not NaN",
        "version field v must be a number or a date, not an object",
    ]
    assert all(find("events", r.document["_id"]) is None for r in bad)


@pytest.mark.parametrize("mode", GUARDED)
def test_dates_are_versions_but_never_compared_with_numbers(
    make_sink: SinkFactory, mode: WriteMode
) -> None:
    import datetime

    sink, find = make_sink(mode, version_field="at")
    oid, day = ObjectId(), datetime.datetime(2026, 3, 1, 12, 0, 0)
    first = record("events", _id=oid, at=day)
    later = record("events", _id=oid, at=day + datetime.timedelta(milliseconds=1))
    earlier = record("events", _id=oid, at=day - datetime.timedelta(days=1))
    guarded_kinds(sink, sink.write([first, later, earlier]), ["written", "written", "stale"])
    number = sink.write([record("events", _id=oid, at=10**12)])
    assert kinds(number) == ["rejected"]
    assert number[0].reason == (
        "version field at is a number, but the stored document's is a date:"
        " versions of one _id must all be numbers or all dates"
    )
    stored = find("events", oid)
    assert stored is not None
    assert stored["at"].replace(tzinfo=None) == later.document["at"].replace(tzinfo=None)


@pytest.mark.parametrize("mode", GUARDED)
def test_a_document_stored_without_a_version_is_older_than_any(
    make_sink: SinkFactory, mode: WriteMode
) -> None:
    plain, find = make_sink(mode)
    oid = ObjectId()
    plain.write([record("events", _id=oid, n=0)])
    guarded, _ = make_sink(mode, version_field="v")
    assert guarded.write([record("events", _id=oid, v=-5, n=1)]) == [WRITTEN]
    assert find("events", oid)["n"] == 1  # type: ignore[index]


def test_a_version_field_with_insert_once_is_a_configuration_mistake(
    make_sink: SinkFactory,
) -> None:
    with pytest.raises(ConfigError, match="--version-field needs --write-mode replace or merge"):
        make_sink(WriteMode.INSERT_ONCE, version_field="v")


# ------------------------------------------------------ conflicting duplicates


def sha256_of(document: dict[str, Any]) -> str:
    """The content hash a conflict's reason shows, computed here from its definition: the
    first 16 hex digits of SHA-256 over the document's BSON with _id first."""
    id_first = {"_id": document["_id"], **{k: v for k, v in document.items() if k != "_id"}}
    return hashlib.sha256(bson.encode(id_first)).hexdigest()[:16]


@pytest.mark.parametrize("ordered", [False, True])
def test_insert_once_tells_a_conflicting_duplicate_from_a_redelivery(
    make_sink: SinkFactory, ordered: bool
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE, check_conflicts=True)
    write = sink.write_ordered if ordered else sink.write
    oid, epoch = ObjectId(), datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    first = record("events", _id=oid, n=1, tags=["a", "b"], at={"$date": 0})
    redelivery = wire.decode_line(wire.json_line(first))
    changed = record("events", _id=oid, n=2, tags=["a", "b"], at={"$date": 0})
    outcomes = write([first, redelivery, changed, record("events", n=3)])
    assert kinds(outcomes) == ["written", "duplicate", "conflict", "written"]
    stored = sha256_of({"_id": oid, "n": 1, "tags": ["a", "b"], "at": epoch})
    mine = sha256_of({"_id": oid, "n": 2, "tags": ["a", "b"], "at": epoch})
    assert outcomes[2].reason == (
        "conflicting duplicate: collection events already holds another document with this _id"
        f" (stored sha256:{stored}, this record sha256:{mine}); insert-once keeps the first"
    )
    assert find("events", oid)["n"] == 1  # type: ignore[index]
    assert kinds(write([changed])) == ["conflict"] and write([redelivery]) == [DUPLICATE]


def test_without_the_check_a_conflicting_duplicate_is_a_duplicate(make_sink: SinkFactory) -> None:
    sink, _ = make_sink(WriteMode.INSERT_ONCE)
    first = record("events", n=1)
    sink.write([first])
    assert sink.write([record("events", _id=first.document["_id"], n=2)]) == [DUPLICATE]


def test_the_content_check_reads_id_first_as_the_store_keeps_it(make_sink: SinkFactory) -> None:
    """MongoDB moves _id to the front: a record that put it last is still a redelivery."""
    sink, _ = make_sink(WriteMode.INSERT_ONCE, check_conflicts=True)
    late_id = wire.decode_line('{"c":"events","d":{"n":1,"nested":{"b":2,"a":1},"_id":"k1"}}')
    assert sink.write([late_id]) == [WRITTEN]
    assert sink.write([wire.decode_line(wire.json_line(late_id))]) == [DUPLICATE]


def test_negative_zero_survives_except_on_ferretdb(make_sink: SinkFactory) -> None:
    """FerretDB 1.24 stores -0.0 as 0.0, so a redelivered record holding -0.0 reads as
    other content there: a conflicting duplicate. MongoDB keeps the double as sent."""
    sink, find = make_sink(WriteMode.INSERT_ONCE, check_conflicts=True)
    signed = record("events", x=-0.0)
    sink.write([signed])
    again = sink.write([wire.decode_line(wire.json_line(signed))])
    stored_x = find("events", signed.document["_id"])["x"]  # type: ignore[index]
    if _on_ferretdb(sink):
        assert math.copysign(1.0, stored_x) == 1.0 and kinds(again) == ["conflict"]
    else:
        assert math.copysign(1.0, stored_x) == -1.0 and again == [DUPLICATE]


# ------------------------------------------------------------------ retention


def test_expiry_is_a_ttl_index_except_that_ferretdb_refuses_it(make_sink: SinkFactory) -> None:
    """FerretDB 1.24 answers expireAfterSeconds with error 238 NotImplemented (and has no
    collMod): it cannot expire documents. MongoDB keeps a TTL index, and a second run
    with another period changes it."""
    store, _ = make_sink(WriteMode.INSERT_ONCE)
    store.prepare(["audit"])
    month, year = Retention("at", 30 * 86400), Retention("at", 365 * 86400)
    if _on_ferretdb(store):
        with pytest.raises(SinkRefused) as refused:
            store.expire(["audit"], month)
        assert "error 238 NotImplemented" in str(refused.value)
        assert str(refused.value).endswith("(FerretDB does not expire documents)")
        assert store.retention("audit") is None
        return
    assert store.retention("audit") is None
    store.expire(["audit", "logins"], month)
    store.expire(["audit"], month)  # idempotent
    assert store.retention("audit") == month and store.retention("logins") == month
    store.expire(["audit"], year)
    assert store.retention("audit") == year and store.retention("logins") == month
