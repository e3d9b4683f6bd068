"""How a bulk that the database refuses as a whole is best taken apart: bisection
(what the sink does) against writing each record alone, on the real local MongoDB.

    python -m bench.isolation [--records 300] [--bad 1] [--rounds 3]

Prints one JSON line: seconds and bulk writes per strategy (medians over the rounds).
The bad records hold a NUL in a string, which FerretDB refuses for the whole insert."""

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
from pymongo import MongoClient

from ingest.sinks.base import Outcome
from ingest.sinks.isolation import BulkRefused, isolate
from ingest.sinks.mongo import MongoSink
from producer import wire


def _records(count: int, bad: int) -> list[wire.Record]:
    records = [
        wire.decode_line(wire.encode_record("iso", {"_id": ObjectId(), "n": n, "pad": "x" * 900}))
        for n in range(count)
    ]
    for k in range(bad):
        poison = wire.encode_record("iso", {"_id": f"bad-{k}", "s": "a\x00b"})
        records.insert((k + 1) * count // (bad + 1), wire.decode_line(poison))
    return records


def _timed(
    strategy: Callable[[Sequence[wire.Record]], list[Outcome]], records: list[wire.Record]
) -> float:
    started = time.perf_counter()
    strategy(records)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--bad", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["INGEST_MONGO_URI"])
    results: dict[str, dict[str, float]] = {}
    try:
        for name in ("bisect", "alone"):
            seconds, calls = [], []
            for _ in range(args.rounds):
                db = client[f"bench_iso_{uuid.uuid4().hex[:8]}"]
                sink = MongoSink(db)
                counted = [0]

                def bulk(
                    part: Sequence[wire.Record],
                    sink: MongoSink = sink,
                    counted: list[int] = counted,
                ) -> list[Outcome]:
                    counted[0] += 1
                    return sink._write_bulk(sink._collection("iso"), part, ordered=False)

                def bisect(records: Sequence[wire.Record], sink: MongoSink = sink) -> list[Outcome]:
                    return isolate(records, bulk, sink._answers)

                def alone(records: Sequence[wire.Record], sink: MongoSink = sink) -> list[Outcome]:
                    try:  # the same first, failed bulk; then every record alone
                        return bulk(records)
                    except BulkRefused:
                        return [o for r in records for o in isolate([r], bulk, sink._answers)]

                records = _records(args.records, args.bad)
                seconds.append(_timed(alone if name == "alone" else bisect, records))
                calls.append(counted[0])
                client.drop_database(db.name)
            results[name] = {
                "seconds": statistics.median(seconds),
                "bulk_writes": statistics.median(calls),
            }
    finally:
        client.close()
    results["bisect_vs_alone_seconds"] = {
        "ratio": results["bisect"]["seconds"] / results["alone"]["seconds"]
    }
    print(json.dumps({"records": args.records, "bad": args.bad, **results}))


if __name__ == "__main__":
    main()
