"""Updates and deletes against inserts, in the same run, through the consumer's MongoDB
sink on the local stack (the write path alone: SQS is measured by the other scenarios).

    python -m bench.operations [--records 2000] [--bulk 100] [--rounds 3]

Per round, in a fresh database: N inserts (the baseline), then on those N documents
N exactly-once `$inc` (unordered: the id filter and the `$push` of recent ids), N
plain `$inc` upserts sent straight through pymongo (the same statement without the
exactly-once filter and push: what exactly-once costs), N ordered `$set` (version
guard), N deletes (tombstone first), and one sweep of N expired tombstones (what
`ingest run` does on a server without TTL indexes). One JSON line: medians of the
rounds, rates in records/s, ratios against the same run's inserts."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from bson import ObjectId
from pymongo import MongoClient, UpdateOne

from ingest.sinks.mongo import MongoSink
from producer import operations, wire
from producer.encode import Encoder
from producer.packing import Packer

COLLECTION = "ops"


def _records(items: list[Any]) -> list[wire.Record]:
    encoder = Encoder(wire.BSON_RECORDS)
    encoded = [
        encoder.operation(COLLECTION, i)
        if isinstance(i, wire.Operation)
        else encoder.item(COLLECTION, i)[0]
        for i in items
    ]
    found: list[wire.Record] = []
    for message in Packer(1 << 22, version=wire.BSON_RECORDS).pack(encoded):
        found += [
            r
            for r in wire.decode_message(message.body, message.attributes)
            if isinstance(r, wire.Record)
        ]
    return found


def _rate(count: int, write: Callable[[], None]) -> float:
    started = time.perf_counter()
    write()
    return count / (time.perf_counter() - started)


def _in_bulks(sink: MongoSink, records: Sequence[wire.Record], bulk: int) -> Callable[[], None]:
    def write() -> None:
        for start in range(0, len(records), bulk):
            outcomes = sink.write(records[start : start + bulk])
            assert all(o.kind.value == "written" for o in outcomes), outcomes[:3]

    return write


def one_round(uri: str, count: int, bulk: int) -> dict[str, float]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    db = client[f"bench_ops_{uuid.uuid4().hex[:8]}"]
    try:
        sink = MongoSink(db)
        ids = [ObjectId() for _ in range(count)]
        inserts = _records([{"_id": i, "n": 0, "pad": "x" * 100} for i in ids])
        incs = _records([operations.update(i, {"$inc": {"n": 1}}) for i in ids])
        sets = _records([operations.update(i, {"$set": {"s": "x"}}, version=1) for i in ids])
        deletes = _records([operations.delete(i, version=2) for i in ids])
        sink.write(_records([operations.update("warm", {"$inc": {"n": 1}})]))  # the probes, once
        found = {"inserts_per_s": _rate(count, _in_bulks(sink, inserts, bulk))}
        found["exactly_once_inc_per_s"] = _rate(count, _in_bulks(sink, incs, bulk))
        plain = [UpdateOne({"_id": i}, {"$inc": {"n": 1}}, upsert=True) for i in ids]

        def bare() -> None:
            for start in range(0, count, bulk):
                db[COLLECTION].bulk_write(plain[start : start + bulk], ordered=False)

        found["plain_inc_per_s"] = _rate(count, bare)
        found["ordered_set_per_s"] = _rate(count, _in_bulks(sink, sets, bulk))
        found["deletes_per_s"] = _rate(count, _in_bulks(sink, deletes, bulk))
        started = time.perf_counter()
        swept = sink.sweep_tombstones(0.0)
        found["sweep_seconds"] = time.perf_counter() - started
        found["swept"] = swept
        found["claims"] = float(bool(sink.operations.claims.needed))
        return found
    finally:
        client.drop_database(db.name)
        client.close()


def run(count: int = 2000, bulk: int = 100, rounds: int = 3) -> dict[str, Any]:
    uri = os.environ.get("INGEST_MONGO_URI", "mongodb://127.0.0.1:27017/")
    results = [one_round(uri, count, bulk) for _ in range(rounds)]
    median = {key: statistics.median(r[key] for r in results) for key in results[0]}
    inserts = median["inserts_per_s"]
    per_update_us = 1e6 / median["exactly_once_inc_per_s"] - 1e6 / median["plain_inc_per_s"]
    return {
        "records": count, "bulk": bulk, "rounds": rounds,
        "inserts_per_s": round(inserts),
        "updates_per_s": round(median["exactly_once_inc_per_s"]),
        "ordered_updates_per_s": round(median["ordered_set_per_s"]),
        "deletes_per_s": round(median["deletes_per_s"]),
        "plain_inc_per_s": round(median["plain_inc_per_s"]),
        "exactly_once_cost_us_per_update": round(per_update_us),
        "updates_vs_inserts": round(median["exactly_once_inc_per_s"] / inserts, 3),
        "ordered_updates_vs_inserts": round(median["ordered_set_per_s"] / inserts, 3),
        "deletes_vs_inserts": round(median["deletes_per_s"] / inserts, 3),
        "tombstone_sweep_seconds": round(median["sweep_seconds"], 3),
        "tombstones_swept": int(median["swept"]),
        "claims": bool(median["claims"]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--bulk", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.records, args.bulk, args.rounds)))


if __name__ == "__main__":
    main()
