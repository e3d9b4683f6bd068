"""Updates and deletes: the producer's checks at the call, the wire format's kind and
how a consumer that predates operations refuses it, the journal, and MongoDB's own
bulk replies to operations, scripted (tests/support/scripted_mongo.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bson import ObjectId
from mockupdb import Request

from ingest.sinks import mongo
from ingest.sinks.memory_updates import UpdateRefused, apply_update
from ingest.sinks.mongo_claims import PROBE_INCREMENTS, PROBE_THREADS
from ingest.sinks.operations import OPS_FIELD, TOMBSTONES_PREFIX
from producer import operations, wire
from producer.encode import Encoder
from producer.journal import decode_entry, encode_entry
from producer.packing import Packer
from producer.testing import RecordingProducer
from tests.support.scripted_mongo import scripted_mongo

#: The last commit before operations: its decoder is what consumers not yet upgraded run.
BEFORE_OPERATIONS = "c54c877"
ROOT = Path(__file__).resolve().parents[2]


def messages(version: str, *items: Any, fifo: bool = False) -> list[Any]:
    return Packer(1 << 20, version=version, fifo=fifo).pack(list(items))


# ------------------------------------------------------------------ the producer


@pytest.mark.parametrize(
    ("update", "options", "reason"),
    [
        ({}, {}, "update document is empty: give at least one operator"),
        ({"name": "x"}, {}, "key 'name' is not an operator: use {'$set': {'name': ...}}"),
        ({"$set": {"_id": 2}}, {}, "an update must not change _id"),
        ({"$rename": {"a": "_id"}}, {}, "an update must not change _id"),
        ({"$frobnicate": {"a": 1}}, {}, "unknown update operator $frobnicate"),
        ({"$set": 5}, {}, "$set takes a document of fields, not int"),
        ({"$inc": {"_ingest.ops": 1}}, {}, "field _ingest is the consumer's own"),
        ({"$inc": {"n": 1}}, {"version": True}, "not a boolean"),
        ({"$inc": {"n": 1}}, {"version": float("nan")}, "finite number"),
        ({"$inc": {"n": 1}}, {"version": "3"}, "not str"),
        ({"$inc": {"n": 1}}, {"version": 3, "ordered": False}, "version= orders an update"),
    ],
)
def test_a_mistaken_update_is_refused_at_the_call_in_one_line(
    update: dict[str, Any], options: dict[str, Any], reason: str
) -> None:
    producer = RecordingProducer()
    with pytest.raises(wire.WireError) as refused:
        producer.update("pages", "home", update, **options)
    assert reason in str(refused.value) and "\n" not in str(refused.value)
    assert producer.operations() == []


def test_a_delete_or_update_needs_an_id() -> None:
    producer = RecordingProducer()
    with pytest.raises(wire.WireError, match="give the _id of the document"):
        producer.delete("pages", None)
    with pytest.raises(wire.WireError, match="_id must not be an array"):
        producer.update("pages", [1], {"$set": {"a": 1}})


def test_accumulating_updates_are_unordered_others_take_the_default_version() -> None:
    producer = RecordingProducer()
    producer.update("pages", "home", {"$inc": {"views": 1}, "$setOnInsert": {"at": 1}})
    producer.update("pages", "home", {"$set": {"title": "Home"}})
    producer.update("pages", "home", {"$inc": {"views": 1}}, ordered=True)
    producer.update("pages", "home", {"$set": {"title": "x"}}, ordered=False)
    producer.delete("pages", "home")
    counter, titled, ordered_counter, unordered_set, deleted = producer.operations("pages")
    assert not counter.ordered and counter.version is None
    assert titled.version == titled.id and ordered_counter.version == ordered_counter.id
    assert not unordered_set.ordered
    assert deleted.kind == wire.DELETE and deleted.version == deleted.id
    assert titled.id < ordered_counter.id < deleted.id  # one process: its ids only grow
    assert producer.documents() == []  # documents() lists what send() sent


@pytest.mark.parametrize("version", ["1", "2"])
def test_operations_travel_beside_documents_and_read_back(version: str) -> None:
    encoder = Encoder(version)
    update = operations.update(7, {"$inc": {"n": 2}}, version=3)
    items = [encoder.item("c", {"_id": 1})[0], encoder.operation("c", update)]
    (message,) = messages(version, *items)
    document, operation = wire.decode_message(message.body, message.attributes)
    assert isinstance(document, wire.Record) and document.operation is None
    assert isinstance(operation, wire.Record) and operation.operation == update
    body, attributes = wire.record_message(operation)  # a dead letter keeps the kind
    (again,) = wire.decode_message(body, attributes)
    assert isinstance(again, wire.Record) and again.operation == update
    assert '"o":{"_id":7,"op":"update"' in wire.json_line(operation)


def test_fifo_deduplication_ids_are_the_operations_not_the_documents() -> None:
    encoder = Encoder("2", fifo=True)
    first = encoder.operation("c", operations.update("same", {"$inc": {"n": 1}}))
    second = encoder.operation("c", operations.update("same", {"$inc": {"n": 1}}))
    assert first.id_key != second.id_key
    (one,), (two,) = messages("2", first, fifo=True), messages("2", second, fifo=True)
    assert one.dedup_id != two.dedup_id


def test_the_journal_keeps_an_operation_as_an_operation() -> None:
    item = Encoder("2").operation("c", operations.delete("gone"))
    again = decode_entry(encode_entry(item))
    assert again == item and again.operation


def test_a_bad_envelope_is_refused_alone_with_its_reason() -> None:
    envelope = {"_id": 1, "op": "upsert", "id": ObjectId()}
    line = wire.join_lines(
        [wire.encode_operation("c", envelope), wire.encode_record("c", {"_id": 2})]
    )
    bad, good = list(wire.iter_records(line))
    assert isinstance(bad, wire.BadRecord) and "must be 'update' or 'delete'" in bad.reason
    assert isinstance(good, wire.Record)
    raw = wire.pack_bson([("c", wire.encode_document(envelope), None)], [True])
    (refused,) = wire.decode_message(wire.bson_body(raw, "identity"), _format(2))
    assert isinstance(refused, wire.BadRecord) and refused.operation


def _format(version: int) -> wire.Attributes:
    return wire.message_attributes("identity", 1, str(version))


# ------------------------------------------- a consumer that predates operations


@pytest.fixture(scope="module")
def decoder_before_operations(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """producer/wire as it was before operations, imported under another name."""
    where = tmp_path_factory.mktemp("before")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", BEFORE_OPERATIONS, "producer/wire"],
        capture_output=True, check=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    (where / "producer" / "wire").rename(where / "wire_before_operations")
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module("wire_before_operations")
    finally:
        sys.path.remove(str(where))


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("1", "record must have 'c' (collection) and 'd' (document)"),
        ("2", "unknown flags 0x02 (this consumer knows 0x01); the records after it cannot be read"),
    ],
)
def test_a_consumer_that_predates_operations_refuses_them_with_a_reason(
    decoder_before_operations: ModuleType, version: str, reason: str
) -> None:
    encoder = Encoder(version)
    inserted = encoder.item("pages", {"_id": "about", "title": "About"})[0]
    counted = encoder.operation("pages", operations.update("home", {"$inc": {"views": 1}}))
    deleted = encoder.operation("pages", operations.delete("old"))
    for message in messages(version, inserted, counted, deleted):
        items = decoder_before_operations.decode_message(message.body, message.attributes)
        records = [i for i in items if type(i).__name__ == "Record"]
        refused = [i for i in items if type(i).__name__ == "BadRecord"]
        # The document before the operations is readable; no operation reads as one.
        assert [dict(r.document)["_id"] for r in records] == ["about"]
        assert refused and refused[0].reason == reason


# ------------------------------------------------------------ the in-memory engine


def test_the_memory_engine_applies_operators_as_mongodb_does() -> None:
    stored = {"_id": 1, "tags": ["a"], "n": 1, "deep": {"x": 1}}
    update = {
        "$addToSet": {"tags": {"$each": ["a", "b", "b"]}},
        "$inc": {"n": 2, "deep.y": 1},
        "$push": {"log": {"$each": [1, 2, 3], "$slice": -2}},
        "$max": {"hi": 5},
        "$unset": {"deep.x": ""},
    }
    changed = apply_update(stored, update, inserting=False)
    assert changed == {
        "_id": 1,
        "tags": ["a", "b"],
        "n": 3,
        "deep": {"y": 1},
        "log": [2, 3],
        "hi": 5,
    }
    assert stored["tags"] == ["a"]  # a copy was changed


@pytest.mark.parametrize(
    ("update", "words"),
    [
        ({"$set": {"a": 1}, "$inc": {"a": 1}}, "(error 40): Updating the path 'a' would create a conflict at 'a'"),
        ({"$set": {"a.b": 1}, "$unset": {"a": ""}}, "(error 40)"),
        ({"$set": {"_id": 2}}, "(error 66): Performing an update on the path '_id'"),
        ({"$inc": {"s": 1}}, "(error 14): Cannot apply $inc to a value of non-numeric type"),
        ({"$push": {"s": 1}}, "(error 2): The field 's' must be an array"),
        ({"$frob": {"a": 1}}, "(error 9): Unknown modifier: $frob"),
    ],
)  # fmt: skip
def test_the_memory_engine_refuses_what_mongodb_refuses_in_its_words(
    update: dict[str, Any], words: str
) -> None:
    with pytest.raises(UpdateRefused) as refused:
        apply_update({"_id": 1, "s": "text"}, update, inserting=False)
    assert words in str(refused.value)


# ------------------------------------------------- MongoDB's replies, scripted


def _stored(found: dict[Any, dict[str, Any]]) -> Any:
    """Finds by _id answered from `found`; tombstone lookups find none; the probe of
    $push's $slice reads back what MongoDB keeps."""

    def find(request: Request) -> dict[str, Any]:
        name = str(request.doc.get("find"))
        wanted = request.doc.get("filter", {}).get("_id")
        if name.startswith(TOMBSTONES_PREFIX):
            batch: list[Any] = []
        elif isinstance(wanted, str) and wanted.startswith("ingest-slice-probe-"):
            batch = [{"_id": wanted, "ids": [1, 2]}]
        elif isinstance(wanted, str) and wanted.startswith("ingest-concurrency-probe-"):
            batch = [{"_id": wanted, "n": PROBE_THREADS * PROBE_INCREMENTS}]  # none lost
        else:
            batch = [found[wanted]] if wanted in found else []
        return {"cursor": {"id": 0, "firstBatch": batch, "ns": f"db.{name}"}, "ok": 1}

    return find


def _records(*ops: wire.Operation) -> list[wire.Record]:
    encoder = Encoder("2")
    (message,) = messages("2", *(encoder.operation("counters", op) for op in ops))
    return [
        r
        for r in wire.decode_message(message.body, message.attributes)
        if isinstance(r, wire.Record)
    ]


def test_operations_go_in_one_bulk_and_each_refused_one_is_judged_by_reading() -> None:
    """MongoDB: an update whose filter (the id already applied, or a version not lower)
    matches nothing makes its upsert hit the _id: E11000 at its index, keyPattern _id
    (https://www.mongodb.com/docs/manual/reference/method/db.collection.updateOne/#upsert).
    The rest of the bulk is applied; each refused one is read once."""
    fresh = operations.update("a", {"$inc": {"n": 1}})
    again = operations.update("b", {"$inc": {"n": 1}})
    stale = operations.update("c", {"$set": {"s": 1}}, version=3)
    reply = {"ok": 1, "n": 1, "nModified": 0, "upserted": [{"index": 0, "_id": "a"}],
             "writeErrors": [
                 {"index": i, "code": 11000, "codeName": "DuplicateKey", "keyPattern": {"_id": 1},
                  "keyValue": {"_id": key}, "errmsg": "E11000 duplicate key error"}
                 for i, key in ((1, "b"), (2, "c"))]}  # fmt: skip
    stored = {
        "b": {"_id": "b", "_ingest": {"ops": [again.id]}},
        "c": {"_id": "c", "_ingest": {"v": 5}},
    }

    def update(request: Request) -> dict[str, Any]:
        probe = request.doc["update"] == "_ingest_check"  # the $slice probe's own writes
        return {"ok": 1, "n": 1, "nModified": 1} if probe else reply

    with scripted_mongo(update=update, find=_stored(stored)) as (uri, server):
        sink = mongo.connect(uri, "db", quick=True)
        outcomes = sink.write(_records(fresh, again, stale))
    assert [o.kind.value for o in outcomes] == ["written", "duplicate", "stale"]
    (bulk,) = [r for r in server.asked("update") if r["update"] == "counters"]
    statements = bulk["updates"]
    assert bulk["ordered"] is False and len(statements) == 3
    assert statements[0]["q"] == {"_id": "a", OPS_FIELD: {"$ne": fresh.id}}
    assert statements[0]["u"]["$push"] == {OPS_FIELD: {"$each": [fresh.id], "$slice": -1000}}
    assert statements[2]["u"]["$set"] == {"s": 1, "_ingest.v": 3}
    assert all(s["upsert"] for s in statements)
    # MongoDB keeps $slice (the probe read back [1, 2]): no $pop to trim; and it loses
    # no concurrent update (the probe's sum came out right): no claims.
    assert not [s for r in server.asked("update") for s in r["updates"] if "$pop" in s["u"]]
    assert not [r for r in server.asked("insert") if r["insert"].startswith("_ingest_claims.")]


def test_a_delete_writes_its_tombstone_before_it_deletes_and_counts_what_it_removed() -> None:
    gone = operations.delete("x", version=4)
    stays = operations.delete("y", version=2)
    order: list[str] = []

    def update(request: Request) -> dict[str, Any]:
        if request.doc["update"] == "_ingest_check":  # the sink's probes
            return {"ok": 1, "n": 1, "nModified": 1}
        order.append(f"tombstones to {request.doc['update']}")
        return {
            "ok": 1,
            "n": 2,
            "nModified": 0,
            "upserted": [{"index": 0, "_id": "x"}, {"index": 1, "_id": "y"}],
        }

    def delete(request: Request) -> dict[str, Any]:
        if request.doc["delete"] == "_ingest_check":  # the sink's probes
            return {"ok": 1, "n": 1}
        order.append(f"delete from {request.doc['delete']}")
        return {"ok": 1, "n": 1}  # one of the two removed: the other is read

    stored = {"y": {"_id": "y", "_ingest": {"v": 3}}}
    with scripted_mongo(update=update, delete=delete, find=_stored(stored)) as (uri, server):
        sink = mongo.connect(uri, "db", quick=True)
        outcomes = sink.write(_records(gone, stays))
    assert order == ["tombstones to _ingest_tombstones.counters", "delete from counters"]
    assert [o.kind.value for o in outcomes] == ["written", "stale"]
    (deletes,) = [r for r in server.asked("delete") if r["delete"] == "counters"]
    assert [d["q"]["_id"] for d in deletes["deletes"]] == ["x", "y"]


# ------------------------------------------------------------------- backfill


def test_backfill_loads_operations_with_the_same_ids_on_every_run(tmp_path: Path) -> None:
    from ingest.tools.backfill import Backfill, Options

    lines = [
        '{"op": "insert", "document": {"_id": "p1", "views": 0}}',
        '{"op": "update", "_id": "p1", "update": {"$inc": {"views": 2}}}',
        '{"op": "update", "_id": "p1", "update": {"$set": {"title": "x"}}, "version": 3}',
        '{"op": "delete", "_id": "p2", "version": {"$date": "2026-01-01T00:00:00Z"}}',
        '{"op": "delete", "_id": "p3"}',
        '{"op": "update", "_id": "p1", "update": {"title": "x"}, "version": 4}',
        '{"op": "upsert", "_id": "p1"}',
    ]
    source = tmp_path / "ops.jsonl"
    source.write_text("\n".join(lines) + "\n")
    runs = []
    for run in range(2):
        producer = RecordingProducer()
        options = Options(path=source, checkpoint=tmp_path / f"c{run}.json", queue_url="q",
                          collection="pages", operations=True, progress=False)  # fmt: skip
        report = Backfill(options, producer, echo=lambda _: None).run()
        assert (report.sent, report.bad_lines) == (4, 3)
        runs.append(producer.operations("pages"))
        assert producer.documents("pages") == [{"_id": "p1", "views": 0}]
    first, again = runs
    assert [op.id for op in first] == [op.id for op in again]  # a re-run applies nothing twice
    assert [(op.kind, op.version) for op in first][:2] == [("update", None), ("update", 3)]
