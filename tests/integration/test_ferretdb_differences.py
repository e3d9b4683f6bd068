"""FerretDB 1.24's differences from MongoDB (README, "Local servers"), each through the
product's own code on the server the tests run against: a test here fails when the
product stops handling the difference, not when pymongo or the server changes.

One test per difference; those kept elsewhere are named here rather than repeated:

- a NUL inside a string fails the whole bulk (PostgreSQL's 22P05): the record alone is
  dead-lettered with the server's reason. tests/contract/test_sink_contract.py
  (test_a_nul_in_a_string_is_stored_except_on_ferretdb); end to end, the "NUL inside a
  string value" case of tests/integration/test_bad_input_e2e.py.
- Decimal128, NaN, MinKey drop the connection: the bulk is bisected and the record
  alone is refused. test_sink_contract.py (test_decimal128_is_stored_except_on_ferretdb);
  end to end, the NaN, MinKey and Decimal128 cases of test_bad_input_e2e.py.
- E11000 names no index: the consumer reads the _id and finds the clashing unique index
  itself. tests/integration/test_failures_end.py
  (test_a_clash_on_a_unique_index_is_dead_lettered_naming_the_key_and_redriven_once_fixed).
- an update's reply may lack nModified, and an unordered update stops at its first
  failed statement: here, below.
- no TTL index (error 238): test_sink_contract.py
  (test_expiry_is_a_ttl_index_except_that_ferretdb_refuses_it) and
  tests/integration/test_retention_stack.py (`ingest init --expire-after` says so and
  exits 1); the tombstone sweep that does not depend on TTL:
  tests/contract/test_sink_operations_contract.py
  (test_tombstones_are_kept_out_of_the_collection_and_expire).
- `ping` (and a read of a missing collection) answers without asking PostgreSQL: the
  breaker's probe reads a stored document instead. tests/reliability/test_faults.py
  (test_postgresql_paused_under_ferretdb_is_an_outage_not_bad_records).

(FerretDB also reports a bulk's upserted indexes wrong; the sink never reads them.)"""

from __future__ import annotations

from typing import Any

from ingest.sinks.base import OutcomeKind, WriteMode
from ingest.sinks.mongo import MongoSink
from ingest.sinks.mongo_bulk import failed_updates_readable
from tests.support.corpus import is_ferretdb
from tests.support.sink_contract import record


def _sink_in_bulk(db: Any) -> MongoSink:
    """The sink as on MongoDB: version-guarded upserts sent in one bulk, whatever the
    server (on FerretDB, the sink would send them one statement each by itself)."""
    sink = MongoSink(db, WriteMode.REPLACE, version_field="v")
    sink.guarded_in_bulk = True
    return sink


def test_the_sink_asks_the_server_whether_it_reads_a_bulk_past_a_refused_upsert(
    mongo_db: Any,
) -> None:
    """FerretDB leaves nModified out of its reply (pymongo cannot read it) and stops at
    the refused statement; MongoDB reports the refusal by index and goes on."""
    assert failed_updates_readable(mongo_db["_ingest_check"]) is not is_ferretdb(mongo_db)
    assert MongoSink(mongo_db, WriteMode.REPLACE, version_field="v").guarded_in_bulk is (
        not is_ferretdb(mongo_db)
    )
    assert mongo_db["_ingest_check"].count_documents({}) == 0  # its probe documents removed


def test_a_refused_upsert_whose_reply_lacks_nmodified_is_settled_as_stale(mongo_db: Any) -> None:
    sink = _sink_in_bulk(mongo_db)
    assert [o.kind for o in sink.write([record("events", _id=1, v=5)])] == [OutcomeKind.WRITTEN]
    (outcome,) = sink.write([record("events", _id=1, v=3)])
    assert outcome.kind is OutcomeKind.STALE
    assert mongo_db.events.find_one({"_id": 1}) == {"_id": 1, "v": 5}


def test_statements_after_a_refused_one_in_an_unordered_bulk_are_applied(mongo_db: Any) -> None:
    """On FerretDB the two after the stale one were not applied by the bulk: the sink
    sends each again on its own, so they are written, once."""
    sink = _sink_in_bulk(mongo_db)
    stored = [record("events", _id=i, v=v) for i, v in ((1, 5), (2, 0), (3, 0))]
    assert [o.kind for o in sink.write(stored)] == [OutcomeKind.WRITTEN] * 3
    batch = [
        record("events", _id=1, v=3),
        record("events", _id=2, v=1),
        record("events", _id=3, v=1),
    ]
    kinds = [o.kind for o in sink.write(batch)]
    assert kinds == [OutcomeKind.STALE, OutcomeKind.WRITTEN, OutcomeKind.WRITTEN]
    assert {d["_id"]: d["v"] for d in mongo_db.events.find()} == {1: 5, 2: 1, 3: 1}
