"""Updates and deletes: the same outcomes from the in-memory sink and from MongoDB
(FerretDB here, and MongoDB's guarded-bulk branch forced on it: "mongo-bulk")."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bson import ObjectId

from ingest.sinks.base import OutcomeKind, WriteMode
from ingest.sinks.memory import MemorySink
from ingest.sinks.mongo import MongoSink
from ingest.sinks.operations import OPS_FIELD, lookup
from producer import operations, wire
from producer.encode import Encoder
from producer.packing import Packer
from tests.support.sink_contract import SinkFactory, make_sink, record

__all__ = ["make_sink"]  # the fixture, shared with the document contract

WRITTEN, DUPLICATE, STALE, REJECTED = (
    OutcomeKind.WRITTEN, OutcomeKind.DUPLICATE, OutcomeKind.STALE, OutcomeKind.REJECTED,
)  # fmt: skip


@pytest.fixture(params=["1", "2"])
def encoder(request: pytest.FixtureRequest) -> Encoder:
    return Encoder(request.param)


def as_records(encoder: Encoder, collection: str, *ops: wire.Operation) -> list[wire.Record]:
    """Operations as the consumer reads them, through the producer's own packing."""
    items = [encoder.operation(collection, op) for op in ops]
    found: list[wire.Record] = []
    for message in Packer(1 << 20, version=encoder.version).pack(items):
        for item in wire.decode_message(message.body, message.attributes):
            assert isinstance(item, wire.Record), item
            found.append(item)
    return found


def kinds(outcomes: list[Any]) -> list[OutcomeKind]:
    return [o.kind for o in outcomes]


def test_an_increment_delivered_twice_counts_once(make_sink: SinkFactory, encoder: Encoder) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    incs = [operations.update("page", {"$inc": {"views": n}}) for n in (1, 2, 4)]
    records = as_records(encoder, "counters", *incs)
    assert kinds(sink.write(records)) == [WRITTEN] * 3
    again = sink.write(records[1:] + records[:1])
    assert kinds(again) == [DUPLICATE] * 3
    assert find("counters", "page")["views"] == 7  # type: ignore[index]


def test_the_recent_ids_are_bounded_and_an_older_redelivery_past_them_applies_again(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    """The documented limit: past `recent` later updates, a redelivery counts twice."""
    sink, find = make_sink(WriteMode.INSERT_ONCE, recent_operations=3)
    incs = [operations.update("page", {"$inc": {"views": 1}}) for _ in range(5)]
    records = as_records(encoder, "counters", *incs)
    for one in records:
        sink.write([one])
    stored = find("counters", "page")
    assert stored is not None and lookup(stored, OPS_FIELD) == [op.id for op in incs[-3:]]
    assert kinds(sink.write([records[-1]])) == [DUPLICATE]
    assert kinds(sink.write([records[0]])) == [WRITTEN]  # forgotten: applied again
    assert find("counters", "page")["views"] == 6  # type: ignore[index]


def test_versioned_sets_end_at_the_highest_version_whatever_the_order(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    sets = {
        v: operations.update("acct", {"$set": {"state": f"v{v}"}}, version=v) for v in range(1, 6)
    }
    shuffled = [sets[v] for v in (3, 1, 5, 2, 4)]
    outcomes = sink.write(as_records(encoder, "accounts", *shuffled))
    assert kinds(outcomes) == [WRITTEN, STALE, WRITTEN, STALE, STALE]
    assert kinds(sink.write(as_records(encoder, "accounts", sets[5]))) == [DUPLICATE]
    assert find("accounts", "acct")["state"] == "v5"  # type: ignore[index]


def test_the_default_version_orders_one_producers_updates(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    first = operations.update("u1", {"$set": {"email": "a@example.com"}})
    second = operations.update("u1", {"$set": {"email": "b@example.com"}})
    assert first.version < second.version  # its own id: time, process, counter
    assert kinds(sink.write(as_records(encoder, "users", second, first))) == [WRITTEN, STALE]
    assert find("users", "u1")["email"] == "b@example.com"  # type: ignore[index]


def test_a_delete_keeps_older_writes_from_bringing_the_document_back(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    doc = ObjectId()
    sink.write([record("users", _id=doc, name="ann")])
    gone = operations.delete(doc, version=10)
    older = operations.update(doc, {"$set": {"name": "late"}}, version=9)
    counter = operations.update(doc, {"$inc": {"logins": 1}})  # no version: never brings it back
    assert kinds(sink.write(as_records(encoder, "users", gone))) == [WRITTEN]
    assert find("users", doc) is None
    assert kinds(sink.write(as_records(encoder, "users", older, counter))) == [STALE, STALE]
    assert kinds(sink.write([record("users", _id=doc, name="ann")])) == [STALE]
    assert find("users", doc) is None
    newer = operations.update(doc, {"$set": {"name": "back"}}, version=11)
    assert kinds(sink.write(as_records(encoder, "users", newer))) == [WRITTEN]
    assert find("users", doc)["name"] == "back"  # type: ignore[index]


@pytest.mark.parametrize("mode", [WriteMode.INSERT_ONCE, WriteMode.REPLACE, WriteMode.MERGE])
def test_a_write_without_a_version_passes_a_tombstone_only_if_sqs_took_it_after_the_delete(
    make_sink: SinkFactory, encoder: Encoder, mode: WriteMode
) -> None:
    """Writes without a version are ordered by arrival: a redelivery of a message sent
    before the delete stays out; a document sent again after it comes back (once, it
    was dropped as stale for the tombstones' whole period)."""
    sink, find = make_sink(mode)
    sink.write([record("users", _id="u1", name="ann")])
    assert kinds(sink.write(as_records(encoder, "users", operations.delete("u1")))) == [WRITTEN]
    now = time.time()

    def sent(at: float, name: str) -> wire.Record:
        return wire.decode_line(wire.encode_record("users", {"_id": "u1", "name": name}), at)

    assert kinds(sink.write([sent(now - 3600, "redelivered")])) == [STALE]
    assert find("users", "u1") is None
    assert kinds(sink.write([sent(now + 5, "again")])) == [WRITTEN]
    assert find("users", "u1")["name"] == "again"  # type: ignore[index]


def test_a_delete_older_than_the_stored_version_is_stale(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    set5 = operations.update("k", {"$set": {"n": 5}}, version=5)
    delete3 = operations.delete("k", version=3)
    assert kinds(sink.write(as_records(encoder, "things", set5, delete3))) == [WRITTEN, STALE]
    assert find("things", "k")["n"] == 5  # type: ignore[index]


def test_records_of_one_id_in_one_batch_apply_in_the_order_they_came(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    doc = ObjectId()
    inserted = record("events", _id=doc, n=1)
    bumped = as_records(encoder, "events", operations.update(doc, {"$inc": {"n": 10}}))
    assert kinds(sink.write([inserted, *bumped])) == [WRITTEN, WRITTEN]
    assert find("events", doc)["n"] == 11  # type: ignore[index]


def test_a_bad_update_is_refused_alone_with_the_servers_reason(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    clash = wire.Operation("update", "b", ObjectId(), None, {"$set": {"x": 1}, "$inc": {"x": 1}})
    good = [operations.update(f"g{n}", {"$inc": {"n": 1}}) for n in range(4)]
    outcomes = sink.write(as_records(encoder, "things", good[0], good[1], clash, good[2], good[3]))
    assert kinds(outcomes)[2] is REJECTED
    assert "refused by the database (error 40" in outcomes[2].reason
    assert "would create a conflict at 'x'" in outcomes[2].reason
    # FerretDB stops an unordered update at its first failure and its reply cannot be
    # read: each statement is sent again on its own, so some come back as duplicates.
    assert all(kind in (WRITTEN, DUPLICATE) for kind in kinds(outcomes)[:2] + kinds(outcomes)[3:])
    assert all(find("things", f"g{n}")["n"] == 1 for n in range(4))  # type: ignore[index]
    assert find("things", "b") is None


def test_an_update_of_the_version_field_is_refused_naming_it(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, _ = make_sink(WriteMode.REPLACE, version_field="v")
    writes_v = operations.update("a", {"$set": {"v": 2}}, version=2)
    (outcome,) = sink.write(as_records(encoder, "things", writes_v))
    assert outcome.kind is REJECTED and "--version-field" in outcome.reason


def test_operations_and_versioned_documents_share_the_version_field(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.REPLACE, version_field="v")
    assert kinds(sink.write([record("things", _id="a", v=2, name="two")])) == [WRITTEN]
    older = operations.update("a", {"$set": {"name": "one"}}, version=1)
    newer = operations.update("a", {"$set": {"name": "three"}}, version=3)
    assert kinds(sink.write(as_records(encoder, "things", older, newer))) == [STALE, WRITTEN]
    assert kinds(sink.write([record("things", _id="a", v=2, name="two")])) == [STALE]
    stored = find("things", "a")
    assert stored is not None and (stored["v"], stored["name"]) == (3, "three")


def test_versions_of_another_kind_are_refused(make_sink: SinkFactory, encoder: Encoder) -> None:
    sink, _ = make_sink(WriteMode.INSERT_ONCE)
    sink.write(as_records(encoder, "things", operations.update("a", {"$set": {"n": 1}}, version=5)))
    by_id = operations.update("a", {"$set": {"n": 2}})  # the default version: an ObjectId
    (outcome,) = sink.write(as_records(encoder, "things", by_id))
    assert (
        outcome.kind is REJECTED
        and "must all be numbers, all dates or all ObjectIds" in outcome.reason
    )


def test_tombstones_are_kept_out_of_the_collection_and_expire(
    make_sink: SinkFactory, encoder: Encoder
) -> None:
    sink, find = make_sink(WriteMode.INSERT_ONCE)
    sink.write([record("users", _id="x", n=1)])
    sink.write(as_records(encoder, "users", operations.delete("x")))
    assert isinstance(sink, MongoSink | MemorySink)
    if isinstance(sink, MongoSink):
        names = sink._db.list_collection_names()
        assert "_ingest_tombstones.users" in names
        assert sink._db.users.count_documents({}) == 0
        assert sink.collection_counts().get("users") == 0
    assert sink.sweep_tombstones(3600) == 0
    assert kinds(sink.write([record("users", _id="x", n=2)])) == [STALE]
    sink.sweep_tombstones(0)  # expired at once: nothing keeps the _id any longer
    assert kinds(sink.write([record("users", _id="x", n=2)])) == [WRITTEN]
    assert find("users", "x")["n"] == 2  # type: ignore[index]
