"""insert-once has two implementations; they must leave the same documents and outcomes.

The default (unordered inserts, duplicate-key errors read as duplicates) is the
faster one here: bench/write_strategies.py measures both side by side."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from ingest.messages import OutcomeKind
from ingest.sink import MongoSink, WriteMode
from producer import wire


def batches() -> list[list[wire.Record]]:
    ids = [ObjectId() for _ in range(30)]
    first = [wire.decode_line(wire.encode_record("e", {"_id": i, "v": 1})) for i in ids[:20]]
    # the second batch repeats ten ids (redeliveries, with other values) and brings ten new
    second = [wire.decode_line(wire.encode_record("e", {"_id": i, "v": 2})) for i in ids[10:]]
    second.append(second[-1])  # and one duplicate inside the batch
    return [first, second]


def run(db: Any, strategy: str) -> tuple[list[list[OutcomeKind]], list[dict[str, Any]]]:
    sink = MongoSink(db, WriteMode.INSERT_ONCE, insert_strategy=strategy)
    kinds = [[o.kind for o in sink.write(batch)] for batch in BATCHES]
    return kinds, list(db.e.find({}, sort=[("_id", 1)]))


BATCHES = batches()


def test_inserts_and_set_on_insert_upserts_behave_the_same(mongo_uri: str) -> None:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    a, b = client[f"t_ins_{ObjectId()}"], client[f"t_soi_{ObjectId()}"]
    try:
        kinds_insert, docs_insert = run(a, "insert")
        kinds_upsert, docs_upsert = run(b, "set_on_insert")
    finally:
        client.drop_database(a.name)
        client.drop_database(b.name)
    assert kinds_insert == kinds_upsert
    assert kinds_insert[1].count(OutcomeKind.DUPLICATE) == 11
    assert docs_insert == docs_upsert
    assert len(docs_insert) == 30 and {d["v"] for d in docs_insert[:20]} == {1}


def test_ferretdb_reports_upserted_indexes_wrong(mongo_db: Any) -> None:
    """FerretDB 1.24 differs from MongoDB here: the second op's upsert is reported at
    index 0. MongoSink matches upserts by _id, so it does not depend on the index."""
    from pymongo import UpdateOne

    mongo_db.e.insert_one({"_id": 1})
    ops = [UpdateOne({"_id": i}, {"$setOnInsert": {"a": 1}}, upsert=True) for i in (1, 2)]
    result = mongo_db.e.bulk_write(ops, ordered=False)
    is_ferretdb = "ferretdbVersion" in mongo_db.client.admin.command("buildInfo")
    assert result.upserted_ids == ({0: 2} if is_ferretdb else {1: 2})
