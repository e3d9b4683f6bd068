"""What telling a conflicting duplicate from a redelivery costs (insert-once with
--on-conflict count or dead-letter, against ignore), on the real local MongoDB.

    python -m bench.conflict_check [--records 1000] [--stored 10000] [--rounds 5]

A collection holds `stored` documents; the same bulk of `records` of them is written
again (all duplicates: the check reads them back with one find $in) with and without
the check, and a bulk of new records likewise (no duplicates: the check reads nothing).
Prints one JSON line: median seconds per bulk for each, and the check's extra cost."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

from ingest.sinks.base import OutcomeKind
from ingest.sinks.mongo import MongoSink
from producer import wire


def _records(count: int) -> list[wire.Record]:
    return [
        wire.decode_line(wire.encode_record("dups", {"_id": ObjectId(), "n": n, "pad": "x" * 200}))
        for n in range(count)
    ]


def _seconds(sink: MongoSink, records: list[wire.Record], expect: OutcomeKind) -> float:
    started = time.perf_counter()
    outcomes = sink.write(records)
    elapsed = time.perf_counter() - started
    assert all(o.kind is expect for o in outcomes), {o.kind for o in outcomes}
    return elapsed


def _median(samples: list[float]) -> float:
    return round(statistics.median(samples), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--stored", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["INGEST_MONGO_URI"])
    db = client[f"bench_conflicts_{uuid.uuid4().hex[:8]}"]
    timings: dict[str, list[float]] = {
        key: [] for key in ("dup_off", "dup_on", "new_off", "new_on")
    }
    try:
        stored = _records(args.stored)
        for start in range(0, len(stored), 1000):
            MongoSink(db).write(stored[start : start + 1000])
        again = stored[: args.records]
        plain, checking = MongoSink(db), MongoSink(db, check_conflicts=True)
        server = "FerretDB" if plain.is_ferretdb else "MongoDB"
        for round_ in range(args.rounds):
            first, second = (plain, checking) if round_ % 2 == 0 else (checking, plain)
            for sink in (first, second):
                key = "on" if sink is checking else "off"
                timings[f"dup_{key}"].append(_seconds(sink, again, OutcomeKind.DUPLICATE))
                timings[f"new_{key}"].append(
                    _seconds(sink, _records(args.records), OutcomeKind.WRITTEN)
                )
    finally:
        client.drop_database(db.name)
    medians = {key: _median(values) for key, values in timings.items()}
    extra = medians["dup_on"] - medians["dup_off"]
    print(json.dumps({
        "server": server, "records": args.records, "stored": args.stored, "rounds": args.rounds,
        "seconds": medians, "check_extra_seconds": round(extra, 4),
        "check_extra_us_per_duplicate": round(extra / args.records * 1e6, 1),
        "new_records_extra_seconds": round(medians["new_on"] - medians["new_off"], 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
