"""How the local FerretDB 1.24 answers version-guarded upserts, against what MongoDB
does, on the server the tests run against. These are why ingest/sinks/mongo_guards.py
sends guarded upserts one statement each on FerretDB (docs/operations.md lists them)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import ReplaceOne
from pymongo.errors import BulkWriteError


def _ferretdb(db: Any) -> bool:
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


def _guarded(_id: int, version: int) -> dict[str, Any]:
    return {
        "q": {"_id": _id, "v": {"$lt": version}},
        "u": {"_id": _id, "v": version},
        "upsert": True,
    }


def test_a_refused_guarded_upsert_is_a_duplicate_key_error_on_both(mongo_db: Any) -> None:
    mongo_db.v.insert_one({"_id": 1, "v": 5})
    reply = mongo_db.command({"update": "v", "updates": [_guarded(1, 3)], "ordered": False})
    assert [e["code"] for e in reply["writeErrors"]] == [11000]
    assert mongo_db.v.find_one({"_id": 1}) == {"_id": 1, "v": 5}


def test_ferretdb_leaves_nmodified_out_of_a_failed_update_so_bulk_write_cannot_read_it(
    mongo_db: Any,
) -> None:
    mongo_db.v.insert_one({"_id": 1, "v": 5})
    reply = mongo_db.command({"update": "v", "updates": [_guarded(1, 3)], "ordered": False})
    stale = ReplaceOne({"_id": 1, "v": {"$lt": 3}}, {"_id": 1, "v": 3}, upsert=True)
    if _ferretdb(mongo_db):
        assert "nModified" not in reply and "n" not in reply
        with pytest.raises(KeyError, match="nModified"):  # pymongo's merge of the reply
            mongo_db.v.bulk_write([stale], ordered=False)
    else:
        assert reply["nModified"] == 0
        with pytest.raises(BulkWriteError):
            mongo_db.v.bulk_write([stale], ordered=False)


def test_ferretdb_stops_an_unordered_update_at_its_first_failed_statement(mongo_db: Any) -> None:
    mongo_db.v.insert_one({"_id": 1, "v": 5})
    updates = [_guarded(1, 3), _guarded(2, 1), _guarded(1, 9)]
    reply = mongo_db.command({"update": "v", "updates": updates, "ordered": False})
    assert [e["index"] for e in reply["writeErrors"]] == [0]
    after = {doc["_id"]: doc["v"] for doc in mongo_db.v.find()}
    if _ferretdb(mongo_db):
        assert after == {1: 5}  # the two statements after the failed one were not applied
    else:
        assert after == {1: 9, 2: 1}
