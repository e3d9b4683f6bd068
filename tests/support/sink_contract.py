"""The sink contract's fixture, shared by tests/contract's document and operation
contracts: the same test against the in-memory sink and against MongoDB (FerretDB
here), and records as the consumer reads them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bson import ObjectId

from ingest.sinks.base import DocumentStore, WriteMode
from ingest.sinks.memory import MemorySink, memory_key
from ingest.sinks.mongo import MongoSink
from producer import wire

Find = Callable[[str, Any], dict[str, Any] | None]
# make_sink(mode, version_field=..., check_conflicts=...) -> (store, find)
SinkFactory = Callable[..., tuple[DocumentStore, Find]]


@pytest.fixture(
    params=["memory", pytest.param("mongo", marks=pytest.mark.stack),
            pytest.param("mongo-bulk", marks=pytest.mark.stack)]
)  # fmt: skip
def make_sink(request: pytest.FixtureRequest) -> SinkFactory:
    """mongo-bulk: the sink as on MongoDB, whose replies show it reads a refused guarded
    upsert in a bulk (mongo_bulk.failed_updates_readable), forced on whatever server the
    tests run against: on FerretDB 1.24, whose replies to those bulks cannot be read,
    this runs MongoDB's branch and its fallback (each statement again on its own)."""
    if request.param == "memory":
        stored = MemorySink().collections  # one store per test, as the database is

        def memory(mode: WriteMode, **options: Any) -> tuple[DocumentStore, Find]:
            sink = MemorySink(mode, **options)
            sink.collections = stored
            return sink, lambda coll, _id: stored[coll].get(memory_key(_id))

        return memory
    db = request.getfixturevalue("mongo_db")

    def mongo(mode: WriteMode, **options: Any) -> tuple[DocumentStore, Find]:
        sink = MongoSink(db, mode, **options)
        if request.param == "mongo-bulk":
            sink.guarded_in_bulk = True
        return sink, lambda coll, _id: db[coll].find_one({"_id": _id})

    return mongo


def record(collection: str, **fields: Any) -> wire.Record:
    document = {"_id": fields.pop("_id", None) or ObjectId(), **fields}
    return wire.decode_line(wire.encode_record(collection, document))
