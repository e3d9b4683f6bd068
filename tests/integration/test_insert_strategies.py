"""How FerretDB differs from MongoDB in what a bulk of upserts reports.

insert-once writes unordered inserts and reads duplicate-key errors as duplicates,
so it does not depend on this; bench/write_strategies.py measures both ways."""

from __future__ import annotations

from typing import Any


def test_ferretdb_reports_upserted_indexes_wrong(mongo_db: Any) -> None:
    """FerretDB 1.24 differs from MongoDB here: the second op's upsert is reported at
    index 0. Anything that matches upserts to records must match them by _id."""
    from pymongo import UpdateOne

    mongo_db.e.insert_one({"_id": 1})
    ops = [UpdateOne({"_id": i}, {"$setOnInsert": {"a": 1}}, upsert=True) for i in (1, 2)]
    result = mongo_db.e.bulk_write(ops, ordered=False)
    is_ferretdb = "ferretdbVersion" in mongo_db.client.admin.command("buildInfo")
    assert result.upserted_ids == ({0: 2} if is_ferretdb else {1: 2})
