"""insert-once, two ways, side by side on the same server, with pymongo directly:
unordered inserts that read duplicate-key errors as duplicates (what the sink does),
and $setOnInsert upserts. Prints JSON."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bson import ObjectId
from pymongo import InsertOne, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

Document = dict[str, Any]


def documents(count: int) -> list[Document]:
    return [{"_id": ObjectId(), "n": n, "pad": "x" * 900} for n in range(count)]


def _inserts(collection: Collection[Document], batch: list[Document]) -> None:
    try:
        collection.bulk_write([InsertOne(d) for d in batch], ordered=False)
    except BulkWriteError as exc:  # duplicates: an earlier delivery wrote them
        assert all(e["code"] == 11000 for e in exc.details["writeErrors"])


def _upserts(collection: Collection[Document], batch: list[Document]) -> None:
    ops = [
        UpdateOne({"_id": d["_id"]}, {"$setOnInsert": {k: v for k, v in d.items() if k != "_id"}},
                  upsert=True)
        for d in batch
    ]  # fmt: skip
    collection.bulk_write(ops, ordered=False)


def rate(write: Any, collection: Collection[Document], batches: list[list[Document]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        write(collection, batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def run(quick: bool = False) -> dict[str, Any]:
    count, size = (5_000, 500) if quick else (20_000, 1000)
    client: MongoClient[Document] = MongoClient(os.environ["INGEST_MONGO_URI"])
    result: dict[str, Any] = {}
    for name, write in (("insert", _inserts), ("set_on_insert", _upserts)):
        db = client[f"bench_strategy_{name}_{ObjectId()}"]
        fresh = documents(count)
        batches = [fresh[i : i + size] for i in range(0, count, size)]
        new_rps = rate(write, db.ops, batches)
        # redelivery: one batch in ten comes again
        again_rps = rate(write, db.ops, batches[:: max(1, len(batches) // 10)] + batches[:1])
        result[name] = {"new_records_per_s": round(new_rps), "redelivered_per_s": round(again_rps)}
        client.drop_database(db.name)
    result["insert_vs_set_on_insert"] = round(
        result["insert"]["new_records_per_s"] / result["set_on_insert"]["new_records_per_s"], 2
    )
    return result


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv)))
