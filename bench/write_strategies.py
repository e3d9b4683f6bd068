"""insert-once, two ways, side by side on the same server: unordered inserts that read
duplicate-key errors as duplicates, and $setOnInsert upserts. Prints JSON."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

from ingest.sink import MongoSink, WriteMode
from producer import wire


def records(count: int) -> list[wire.Record]:
    pad = "x" * 900
    return [
        wire.decode_line(wire.encode_record("ops", {"_id": ObjectId(), "n": n, "pad": pad}))
        for n in range(count)
    ]


def rate(sink: MongoSink, batches: list[list[wire.Record]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        sink.write(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def run(quick: bool = False) -> dict[str, Any]:
    count, size = (5_000, 500) if quick else (20_000, 1000)
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["INGEST_MONGO_URI"])
    result: dict[str, Any] = {}
    for strategy in ("insert", "set_on_insert"):
        db = client[f"bench_strategy_{strategy}_{ObjectId()}"]
        sink = MongoSink(db, WriteMode.INSERT_ONCE, insert_strategy=strategy)
        fresh = records(count)
        batches = [fresh[i : i + size] for i in range(0, count, size)]
        new_rps = rate(sink, batches)
        # redelivery: one batch in ten comes again
        again_rps = rate(sink, batches[:: max(1, len(batches) // 10)] + batches[:1])
        result[strategy] = {
            "new_records_per_s": round(new_rps),
            "redelivered_per_s": round(again_rps),
        }
        client.drop_database(db.name)
    result["insert_vs_set_on_insert"] = round(
        result["insert"]["new_records_per_s"] / result["set_on_insert"]["new_records_per_s"], 2
    )
    return result


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv)))
