"""The MongoDB sink against MongoDB's own reply shapes, which FerretDB never sends,
scripted on 127.0.0.1 (tests/support/scripted_mongo.py). Each reply follows the
MongoDB documentation page cited beside it; the sink's outcome is what that page
implies: a duplicate, stale, refused with the server's reason, or an outage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from bson import ObjectId
from mockupdb import Request

from ingest.errors import SinkRefused, SinkUnavailable
from ingest.sinks import mongo
from ingest.sinks.base import OutcomeKind, Retention, WriteMode
from ingest.sinks.mongo_bulk import failed_updates_readable
from ingest.sinks.operations import TOMBSTONES_PREFIX
from producer import wire
from tests.support.scripted_mongo import documents, scripted_mongo

# https://www.mongodb.com/docs/manual/reference/command/insert/#output
INSERT_OUTPUT = "insert command output: n, writeErrors[index, code, errmsg], writeConcernError"
# https://www.mongodb.com/docs/manual/reference/command/update/#output
UPDATE_OUTPUT = "update command output: n, nModified, upserted[index, _id], writeErrors"


def records(*documents: Mapping[str, Any]) -> list[wire.Record]:
    return [wire.decode_line(wire.encode_record("events", dict(d))) for d in documents]


def kinds(outcomes: list[Any]) -> list[str]:
    return [outcome.kind.value for outcome in outcomes]


def ids(count: int) -> list[ObjectId]:
    return [ObjectId() for _ in range(count)]


def duplicate_key(
    index: int, pattern: dict[str, int], value: dict[str, Any], name: str
) -> dict[str, Any]:
    """A writeError for E11000 as MongoDB 4.4+ words it, with keyPattern and keyValue:
    https://www.mongodb.com/docs/manual/core/index-unique/ (unique constraint) and
    https://www.mongodb.com/docs/manual/reference/error-codes/ (11000 DuplicateKey)."""
    return {
        "index": index, "code": 11000, "codeName": "DuplicateKey",
        "errmsg": f"E11000 duplicate key error collection: db.events index: {name} dup key: {value}",
        "keyPattern": pattern, "keyValue": value,
    }  # fmt: skip


def test_a_duplicate_key_on_id_is_a_redelivery_and_needs_no_read() -> None:
    a, b, c = ids(3)
    reply = {"ok": 1, "n": 2, "writeErrors": [duplicate_key(1, {"_id": 1}, {"_id": b}, "_id_")]}
    with scripted_mongo(insert=lambda r: reply) as (uri, server):
        sink = mongo.connect(uri, "db", quick=True)
        outcomes = sink.write(records({"_id": a}, {"_id": b}, {"_id": c}))
    assert kinds(outcomes) == ["written", "duplicate", "written"]
    # The server's keyPattern is the evidence: no read of the stored _id was needed.
    assert [r for r in server.asked("find") if r["find"] == "events"] == []


def test_a_duplicate_key_on_another_unique_index_is_refused_naming_it() -> None:
    a, b = ids(2)
    clash = duplicate_key(0, {"email": 1}, {"email": "ann@example.com"}, "email_1")
    reply = {"ok": 1, "n": 1, "writeErrors": [clash]}
    with scripted_mongo(insert=lambda r: reply) as (uri, _):
        sink = mongo.connect(uri, "db", quick=True)
        first, second = sink.write(records({"_id": a, "email": "ann@example.com"}, {"_id": b}))
    assert first.kind is OutcomeKind.REJECTED and second.kind is OutcomeKind.WRITTEN
    assert first.reason == (
        'duplicate key: another document in events already has {"email": "ann@example.com"}'
        " (unique index email_1); this record was not written"
    )


def test_a_partial_bulk_with_errors_at_several_indexes_gives_each_its_outcome() -> None:
    """One unordered insert, six records: written, a redelivery, a clash, written,
    refused by validation, and a write conflict to try again."""
    six = ids(6)
    errors = [
        duplicate_key(1, {"_id": 1}, {"_id": six[1]}, "_id_"),
        duplicate_key(2, {"email": 1}, {"email": "x"}, "email_1"),
        # https://www.mongodb.com/docs/manual/core/schema-validation/handle-invalid-documents/
        {
            "index": 4,
            "code": 121,
            "codeName": "DocumentValidationFailure",
            "errmsg": "Document failed validation",
        },
        # https://www.mongodb.com/docs/manual/reference/error-codes/ (112 WriteConflict)
        {"index": 5, "code": 112, "codeName": "WriteConflict", "errmsg": "Write conflict"},
    ]
    reply = {"ok": 1, "n": 2, "writeErrors": errors}
    with scripted_mongo(insert=lambda r: reply) as (uri, _):
        sink = mongo.connect(uri, "db", quick=True)
        outcomes = sink.write(records(*({"_id": i, "email": str(n)} for n, i in enumerate(six))))
    assert kinds(outcomes) == ["written", "duplicate", "rejected", "written", "rejected", "retry"]
    assert outcomes[4].reason == (
        "refused by the database (error 121 DocumentValidationFailure): Document failed validation"
    )


def test_a_write_concern_error_is_an_outage_not_the_records() -> None:
    """Written on the primary, not acknowledged as asked (w: majority, wtimeout):
    https://www.mongodb.com/docs/manual/reference/write-concern/ (writeConcernError)."""
    reply = {
        "ok": 1, "n": 2,
        "writeConcernError": {"code": 64, "codeName": "WriteConcernFailed",
                              "errmsg": "waiting for replication timed out",
                              "errInfo": {"wtimeout": True}},
    }  # fmt: skip
    with scripted_mongo(insert=lambda r: reply) as (uri, _):
        sink = mongo.connect(uri, "db", quick=True, w="majority")
        with pytest.raises(SinkUnavailable, match="write concern not satisfied"):
            sink.write(records({"_id": 1}, {"_id": 2}))


@pytest.mark.parametrize(
    "reply",
    [
        # https://www.mongodb.com/docs/manual/core/retryable-writes/ (RetryableWriteError)
        {"ok": 0, "code": 262, "codeName": "ExceededTimeLimit", "errmsg": "operation exceeded",
         "errorLabels": ["RetryableWriteError"]},
        {"ok": 0, "code": 9999, "codeName": "SomethingNew", "errmsg": "a code nobody lists",
         "errorLabels": ["RetryableWriteError"]},
        # https://www.mongodb.com/docs/manual/reference/error-codes/ (10107 NotWritablePrimary)
        {"ok": 0, "code": 10107, "codeName": "NotWritablePrimary", "errmsg": "not primary"},
        # 13 Unauthorized: our access, not the records
        {"ok": 0, "code": 13, "codeName": "Unauthorized", "errmsg": "not authorized on db"},
    ],
    ids=["retryable-label", "unknown-code-retryable-label", "not-primary", "unauthorized"],
)  # fmt: skip
def test_errors_about_the_server_are_outages_never_a_refused_record(reply: dict[str, Any]) -> None:
    with scripted_mongo(insert=lambda r: reply) as (uri, _):
        sink = mongo.connect(uri, "db", quick=True)
        with pytest.raises(SinkUnavailable):
            sink.write(records({"_id": 1}, {"_id": 2}))


def test_upserts_answered_with_nmodified_and_upserted_indexes_are_written() -> None:
    a, b, c = ids(3)
    reply = {
        "ok": 1,
        "n": 3,
        "nModified": 1,
        "upserted": [{"index": 0, "_id": a}, {"index": 2, "_id": c}],
    }
    with scripted_mongo(update=lambda r: reply) as (uri, server):
        sink = mongo.connect(uri, "db", WriteMode.MERGE, quick=True)
        outcomes = sink.write(records({"_id": a, "x": 1}, {"_id": b, "x": 2}, {"_id": c, "x": 3}))
    assert kinds(outcomes) == ["written"] * 3
    (update,) = server.asked("update")
    assert update["ordered"] is False


def _stored(versions: dict[Any, int]) -> Any:
    """A find by _id answered from `versions` (a cursor's first batch)."""

    def find(request: Request) -> dict[str, Any]:
        wanted = request.doc.get("filter", {}).get("_id")
        if str(request.doc.get("find")).startswith(TOMBSTONES_PREFIX):
            wanted = None  # no document was deleted: no tombstone
        batch = [{"_id": wanted, "v": versions[wanted]}] if wanted in versions else []
        return {"cursor": {"id": 0, "firstBatch": batch, "ns": "db.events"}, "ok": 1}

    return find


def test_guarded_upserts_in_one_bulk_judge_each_refused_one_by_the_stored_version() -> None:
    """MongoDB's branch: the guard's refusals come back as writeErrors at their indexes,
    and the rest of the bulk is applied."""
    stale, newer, same = ids(3)
    inserts = {"ok": 1, "n": 0, "writeErrors": [
        duplicate_key(i, {"_id": 1}, {"_id": x}, "_id_") for i, x in enumerate((stale, newer, same))
    ]}  # fmt: skip
    updates = {"ok": 1, "n": 1, "nModified": 1, "writeErrors": [
        duplicate_key(0, {"_id": 1}, {"_id": stale}, "_id_"),
        duplicate_key(2, {"_id": 1}, {"_id": same}, "_id_"),
    ]}  # fmt: skip
    with scripted_mongo(
        insert=lambda r: inserts, update=lambda r: updates, find=_stored({stale: 5, same: 7})
    ) as (uri, server):
        sink = mongo.connect(uri, "db", WriteMode.REPLACE, quick=True, version_field="v")
        sink.guarded_in_bulk = True
        outcomes = sink.write(
            records({"_id": stale, "v": 3}, {"_id": newer, "v": 4}, {"_id": same, "v": 7})
        )
    assert kinds(outcomes) == ["stale", "written", "duplicate"]
    (update,) = server.asked("update")
    assert len(update["updates"]) == 3


def test_guarded_records_all_new_send_no_empty_bulk() -> None:
    """Every record new: the inserts take them all and no update is sent (pymongo
    refuses an empty bulk, which was once taken for an outage)."""
    with scripted_mongo(insert=lambda r: {"ok": 1, "n": len(documents(r))}) as (uri, server):
        sink = mongo.connect(uri, "db", WriteMode.MERGE, quick=True, version_field="v")
        sink.guarded_in_bulk = True
        outcomes = sink.write(records({"_id": 1, "v": 1}, {"_id": 2, "v": 1}))
    assert kinds(outcomes) == ["written", "written"]
    assert server.asked("update") == []


def test_mongodb_shows_it_reads_a_refused_guarded_upsert_in_a_bulk() -> None:
    """The evidence that picks the bulk branch: the refused statement answered at its
    index, and the statement after it applied."""
    stored: dict[str, Any] = {}

    def update(request: Request) -> dict[str, Any]:
        refused, applied = documents(request)
        stored[applied["q"]["_id"]] = {"_id": applied["q"]["_id"], "v": 1}
        return {"ok": 1, "n": 1, "nModified": 0,
                "upserted": [{"index": 1, "_id": applied["q"]["_id"]}],
                "writeErrors": [duplicate_key(0, {"_id": 1}, {"_id": refused["q"]["_id"]}, "_id_")]}  # fmt: skip

    def find(request: Request) -> dict[str, Any]:
        wanted = request.doc.get("filter", {}).get("_id")
        batch = [stored[wanted]] if wanted in stored else []
        return {"cursor": {"id": 0, "firstBatch": batch, "ns": "db._ingest_check"}, "ok": 1}

    with scripted_mongo(update=update, find=find) as (uri, _):
        sink = mongo.connect(uri, "db", quick=True)
        assert failed_updates_readable(sink._db["_ingest_check"]) is True


# https://www.mongodb.com/docs/manual/core/index-ttl/ (expireAfterSeconds on a date field;
# an existing index's period is changed with collMod, not by creating it again)
def _index_list(*indexes: dict[str, Any]) -> Any:
    def list_indexes(request: Request) -> dict[str, Any]:
        batch = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}, *indexes]
        return {"cursor": {"id": 0, "firstBatch": batch, "ns": "db.events"}, "ok": 1}

    return list_indexes


def test_expiry_on_mongodb_creates_a_ttl_index_on_the_field() -> None:
    with scripted_mongo(listIndexes=_index_list()) as (uri, script):
        mongo.connect(uri, "db", quick=True).expire(["events"], Retention("at", 3600))
    [created] = script.asked("createIndexes")
    assert created["indexes"] == [{"key": {"at": 1}, "name": "at_1", "expireAfterSeconds": 3600}]
    assert script.asked("collMod") == []


def test_expiry_on_mongodb_changes_an_existing_indexs_period_by_collmod() -> None:
    old = {"v": 2, "key": {"at": 1}, "name": "at_1", "expireAfterSeconds": 60}
    with scripted_mongo(listIndexes=_index_list(old)) as (uri, script):
        mongo.connect(uri, "db", quick=True).expire(["events"], Retention("at", 3600))
    [changed] = script.asked("collMod")
    assert changed["collMod"] == "events"
    assert changed["index"] == {"keyPattern": {"at": 1}, "expireAfterSeconds": 3600}
    assert script.asked("createIndexes") == []


def test_expiry_refused_by_mongodb_gives_its_reason_without_a_ferretdb_hint() -> None:
    refusal = {"ok": 0, "code": 67, "codeName": "CannotCreateIndex",
               "errmsg": "TTL indexes are single-field indexes"}  # fmt: skip
    with scripted_mongo(listIndexes=_index_list(), createIndexes=lambda r: refusal) as (uri, _):
        sink = mongo.connect(uri, "db", quick=True)
        with pytest.raises(SinkRefused) as refused:
            sink.expire(["events"], Retention("at", 3600))
    message = str(refused.value)
    assert "refused to expire events by at" in message
    assert "TTL indexes are single-field indexes" in message
    assert "FerretDB" not in message


def test_a_record_mongodb_hangs_up_on_each_time_is_refused_without_a_ferretdb_hint() -> None:
    """The server answers queries but closes the connection on this record's insert:
    the record's fault, said without FerretDB's hint (this server is not FerretDB)."""

    def hang_up(request: Request) -> None:
        request.hangup()

    with scripted_mongo(insert=hang_up) as (uri, _):
        sink = mongo.connect(uri, "db", quick=True)
        [outcome] = sink.write(records({"_id": 1}))
    assert outcome.kind is OutcomeKind.REJECTED
    assert outcome.reason == "the database closed the connection each time this record was written"
