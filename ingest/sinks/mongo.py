"""The sink seam on MongoDB: unordered bulk writes keyed on _id. The only place in the
consumer that speaks pymongo's write API.

insert-once: unordered inserts; a duplicate-key error whose _id is stored means an
earlier delivery already wrote the record (mongo_clashes.py: otherwise it clashed on
another unique index, and is refused). On FerretDB an insert costs a fifth of an
upsert, and on MongoDB it is no slower, so this keeps upsert semantics at insert speed.
replace: inserts first, then only the records whose _id is stored as replace-upserts.
merge: $set upserts of the record's fields.
With a version field, replace and merge write only over a lower stored version, and
insert-once can tell a conflicting duplicate from a redelivery (mongo_guards.py).

A bulk refused as a whole while the server still answers is bisected (isolation.py).
Only a server that does not answer a real query in time is an outage: `ping` reads a
document by _id (FerretDB answers the `ping` command even when its PostgreSQL pool is
exhausted and every query hangs)."""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pymongo
from bson.errors import BSONError
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    DuplicateKeyError,
    InvalidName,
    InvalidURI,
    OperationFailure,
    PyMongoError,
)
from pymongo.write_concern import WriteConcern

from ingest.errors import ConfigError, SinkRefused, SinkUnavailable
from ingest.sinks import modes
from ingest.sinks.base import (
    AFTER_FAILURE,
    DUPLICATE,
    INTERNAL_PREFIX,
    REPLICAS_COLLECTION,
    WRITTEN,
    Outcome,
    OutcomeKind,
    Retention,
    WriteMode,
    group_by_collection,
    rejected,
    retry,
)
from ingest.sinks.documents import id_key, merge_refusal
from ingest.sinks.isolation import BulkRefused, isolate, stop_after_first_retry
from ingest.sinks.modes import Document
from ingest.sinks.mongo_bulk import Target, bulk, failed_updates_readable, in_order
from ingest.sinks.mongo_clashes import UniqueIndexes
from ingest.sinks.mongo_errors import UNENCODABLE, cause, server_reason
from ingest.sinks.mongo_guards import CheckBudget, mark_conflicts, write_guarded
from ingest.sinks.mongo_operations import HELD_ELSEWHERE, Operations
from ingest.sinks.mongo_tombstones import Tombstones
from ingest.sinks.operations import DEFAULT_RECENT, rounds, version_path
from ingest.sinks.versions import checked_version_field
from producer.wire import Record, bson_problem, record_id

# Short timeouts for the operator tools and the startup check: a server that does not
# answer is an error in seconds.
QUICK_TIMEOUT_MS = 4000
CHECK_COLLECTION = INTERNAL_PREFIX + "check"  # where `ingest check` tries a write
#: How long a probe's query may take before the server counts as not answering.
PROBE_SECONDS = 5.0
PROBE_ID = "probe"  # the document the probe reads in CHECK_COLLECTION
#: A duplicate-key error on an upsert's own _id: another writer upserted it meanwhile.
CONCURRENT = retry("a concurrent write of this _id got in the way")


def connect(
    uri: str,
    database: str,
    mode: WriteMode = WriteMode.INSERT_ONCE,
    *,
    w: str | None = None,
    journal: bool | None = None,
    pool: int = 10,
    quick: bool = False,
    version_field: str | None = None,
    check_conflicts: bool = False,
    conflict_check_share: float | None = None,
    recent_operations: int = DEFAULT_RECENT,
) -> MongoSink:
    """The sink for `uri` (no network until its first use). `w` and `journal` make the
    write concern (None: the URI's or the server's default). `version_field`: replace
    and merge write only over a lower version; `check_conflicts`: insert-once tells a
    duplicate with other content from a redelivery, within `conflict_check_share` of
    the time when given (CheckBudget); `recent_operations`: the operation ids each
    document keeps (ingest/sinks/operations.py)."""
    timeout_ms = QUICK_TIMEOUT_MS if quick else 5000
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": timeout_ms,
        # A server that accepts connections but never answers must fail the write (and
        # open the breaker), not hang a writer forever.
        "socketTimeoutMS": QUICK_TIMEOUT_MS if quick else 30000,
        "maxPoolSize": pool,
    }
    if quick:
        options["connectTimeoutMS"] = QUICK_TIMEOUT_MS
    try:
        db: Database[Document] = MongoClient(uri, **options)[database]
    except (ConfigurationError, InvalidURI, ValueError) as exc:
        raise ConfigError(f"--mongo-uri: {exc}") from exc
    concern = None
    if w is not None or journal is not None:
        concern = WriteConcern(w=int(w) if w is not None and w.isdigit() else w, j=journal)
    return MongoSink(
        db, mode, write_concern=concern, where=f"MongoDB at {hosts(uri)}",
        version_field=version_field, check_conflicts=check_conflicts,
        conflict_check_share=conflict_check_share, recent_operations=recent_operations,
    )  # fmt: skip


def hosts(uri: str) -> str:
    """The hosts of a MongoDB URI, without credentials (for messages)."""
    rest = uri.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0] or "?"


class MongoSink:
    def __init__(
        self,
        database: Database[Document],
        mode: WriteMode = WriteMode.INSERT_ONCE,
        *,
        write_concern: WriteConcern | None = None,
        where: str = "MongoDB",
        version_field: str | None = None,
        check_conflicts: bool = False,
        conflict_check_share: float | None = None,
        recent_operations: int = DEFAULT_RECENT,
    ) -> None:
        self._db = database
        self.where = where  # "MongoDB at host:port", for messages
        self.mode = mode
        self.version_field = checked_version_field(mode, version_field)
        self._check_conflicts = check_conflicts and mode is WriteMode.INSERT_ONCE
        self._check_budget = (
            CheckBudget(conflict_check_share) if conflict_check_share is not None else None
        )
        self._write_concern = write_concern
        self._collections: dict[str, Collection[Document]] = {}
        self._indexes = UniqueIndexes()
        self._ferretdb: bool | None = None
        self._guarded_in_bulk: bool | None = None
        self._probe_stored = False
        self._lock = threading.Lock()
        path = version_path(self.version_field)
        self.tombstones = Tombstones(database, path, self.version_field)
        self.operations = Operations(
            self.tombstones, path, self.version_field, recent_operations, self._indexes
        )

    @property
    def database(self) -> str:
        return self._db.name

    @property
    def is_ferretdb(self) -> bool:
        """FerretDB speaks MongoDB's protocol but not every type (see the README)."""
        if self._ferretdb is None:
            try:
                info = self._db.client.admin.command("buildInfo")
            except PyMongoError as exc:
                raise self._unavailable(exc) from exc
            self._ferretdb = "ferretdbVersion" in info
        return self._ferretdb

    @property
    def guarded_in_bulk(self) -> bool:
        """Can refused guarded upserts go in one bulk here? Asked of the server once."""
        with self._lock:
            if self._guarded_in_bulk is None:
                self._guarded_in_bulk = failed_updates_readable(self._db[CHECK_COLLECTION])
            return self._guarded_in_bulk

    @guarded_in_bulk.setter
    def guarded_in_bulk(self, value: bool) -> None:
        """For tests that run either way on one server."""
        self._guarded_in_bulk = value

    def _collection(self, name: str) -> Collection[Document]:
        found = self._collections.get(name)
        if found is None:
            found = self._db.get_collection(name, write_concern=self._write_concern)
            self._collections[name] = found
        return found

    def ping(self) -> None:
        """A real query, within PROBE_SECONDS: does the server answer? A read by _id of a
        document that exists: FerretDB answers a read of a collection that does not
        exist from its own catalogue, without asking PostgreSQL (measured: it answered
        so while PostgreSQL was paused), and its `ping` command proves even less."""
        probe = self._db[CHECK_COLLECTION]
        try:
            with pymongo.timeout(PROBE_SECONDS):
                if not self._probe_stored:
                    with contextlib.suppress(DuplicateKeyError):  # another replica's, as good
                        probe.update_one({"_id": PROBE_ID}, {"$set": {"probe": True}}, upsert=True)
                    self._probe_stored = True
                if probe.find_one({"_id": PROBE_ID}) is None:
                    self._probe_stored = False  # removed meanwhile: stored again next time
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: PyMongoError) -> SinkUnavailable:
        """One line for the operator: where, and why (not pymongo's whole topology)."""
        if isinstance(exc, OperationFailure):
            reason = server_reason(exc.code, exc.details or {}, str(exc))
            return SinkUnavailable(f"{self.where}: {reason}")
        return SinkUnavailable(f"{self.where} does not answer: {cause(exc)}")

    def _answers(self) -> bool:
        """The evidence for a bulk that failed as a whole: does the server still answer?"""
        try:
            self.ping()
        except SinkUnavailable:
            return False
        return True

    # ------------------------------------------------------------------ writes

    def write(self, records: Sequence[Record]) -> list[Outcome]:
        return self._write(records, ordered=False)

    def write_ordered(self, records: Sequence[Record]) -> list[Outcome]:
        return self._write(records, ordered=True)

    def _write(self, records: Sequence[Record], *, ordered: bool) -> list[Outcome]:
        outcomes: list[Outcome] = [WRITTEN] * len(records)
        for name, indexes in group_by_collection(records).items():
            group = [records[i] for i in indexes]
            try:
                collection = self._collection(name)
            except InvalidName as exc:  # the driver refuses the name: these records' fault
                found = [rejected(f"collection name {name[:60]!r} is refused: {exc}")] * len(group)
            else:

                def bulk(
                    part: Sequence[Record], into: Collection[Document] = collection
                ) -> list[Outcome]:
                    return self._write_bulk(into, part, ordered=ordered)

                refused = self._refused_by_mode(group)
                if not refused:
                    found = isolate(group, bulk, self._answers, ordered=ordered)
                else:
                    found = [refused.get(i, WRITTEN) for i in range(len(group))]
                    kept = [i for i in range(len(group)) if i not in refused]
                    part = [group[i] for i in kept]  # none left: no empty bulk
                    written = isolate(part, bulk, self._answers, ordered=ordered) if part else []
                    for index, outcome in zip(kept, written, strict=True):
                        found[index] = outcome
            for index, outcome in zip(indexes, found, strict=True):
                outcomes[index] = outcome
        return stop_after_first_retry(outcomes) if ordered else outcomes

    def _refused_by_mode(self, records: Sequence[Record]) -> dict[int, Outcome]:
        """Records this write mode cannot write as sent (merge: a dotted field name),
        refused once before any bulk, by their index."""
        if self.mode is not WriteMode.MERGE:
            return {}
        reasons = {i: merge_refusal(record) for i, record in enumerate(records)}
        return {i: rejected(reason) for i, reason in reasons.items() if reason}

    def _write_bulk(
        self, collection: Collection[Document], records: Sequence[Record], *, ordered: bool
    ) -> list[Outcome]:
        """One bulk in the configured mode. Raises BulkRefused when the store (or the
        driver, for a document that cannot become BSON) fails it as a whole."""
        try:
            if any(record.operation is not None for record in records):
                return self._write_rounds(collection, records, ordered=ordered)
            outcomes = self._write_mode(collection, records, ordered=ordered)
            # After the write, whatever its kind: a delete's tombstone may outlive it.
            self.tombstones.undo_outlived(collection, records, outcomes)
            return outcomes
        except UNENCODABLE as exc:
            raise BulkRefused(bson_problem(exc, records[0].document)) from exc
        except AutoReconnect as exc:
            raise BulkRefused(self._hang_up_reason(), connection_lost=True) from exc
        except PyMongoError as exc:  # nothing we know: is it the server, or this bulk?
            if not self._answers():
                raise SinkUnavailable(f"{self.where} does not answer: {cause(exc)}") from exc
            raise  # it answers: the write stage contains this to the record that raises it

    def _write_rounds(
        self, collection: Collection[Document], records: Sequence[Record], *, ordered: bool
    ) -> list[Outcome]:
        """Documents and operations, each _id once a round (in the order they came):
        the documents in the configured mode, the operations in a bulk of their own (an
        unordered bulk_write sends one command per kind either way). Ordered (FIFO):
        after an _id's record to retry, that _id's later records wait (AFTER_FAILURE)."""
        outcomes: list[Outcome] = [AFTER_FAILURE] * len(records)
        waiting: set[Any] = set()
        for turn in rounds(records):
            now = [i for i in turn if not ordered or _key(records[i]) not in waiting]
            plain = [i for i in now if records[i].operation is None]
            changes = [i for i in now if records[i].operation is not None]
            if plain:
                self._write_plain(collection, records, plain, outcomes)
            if changes:
                found = self.operations.write(collection, [records[i] for i in changes])
                _fill(outcomes, changes, found)
            # Before the next round: a later record of an _id meets what this one left.
            written = [outcomes[i] for i in now]
            self.tombstones.undo_outlived(collection, [records[i] for i in now], written)
            _fill(outcomes, now, written)
            if ordered:
                waiting |= {_key(records[i]) for i in now if not outcomes[i].settled}
        return outcomes

    def _write_plain(
        self,
        collection: Collection[Document],
        records: Sequence[Record],
        plain: list[int],
        outcomes: list[Outcome],
    ) -> None:
        """A round's documents; claimed like its operations where the server loses
        concurrent updates (a guarded replace is an update too)."""

        def write(held: list[int]) -> None:
            indexes = [plain[n] for n in held]
            found = self._write_mode(collection, [records[i] for i in indexes], ordered=False)
            _fill(outcomes, indexes, found)

        claims = self.operations.claims
        if self.mode is WriteMode.INSERT_ONCE or not claims.required(self._db[CHECK_COLLECTION]):
            write(list(range(len(plain))))
            return
        ids = [record_id(records[i]) for i in plain]
        for n in claims.each_held(collection, ids, write):
            outcomes[plain[n]] = HELD_ELSEWHERE

    def sweep_tombstones(self, period_seconds: float) -> int:
        """Tombstones older than the period expire: by a TTL index where the server
        keeps one, else deleted now (how many is returned)."""
        try:
            return self.tombstones.sweep(period_seconds, self._server_now())
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    def _server_now(self) -> datetime.datetime:
        """The server's clock (the tombstones' `at` is the server's $currentDate)."""
        local = self._db.client.admin.command("hello").get("localTime")
        if isinstance(local, datetime.datetime):
            return local
        return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)

    def _write_mode(
        self, collection: Collection[Document], records: Sequence[Record], *, ordered: bool
    ) -> list[Outcome]:
        if self.version_field is not None:
            return write_guarded(
                collection, records, self.mode, self.version_field,
                ordered=ordered, indexes=self._indexes, in_bulk=self.guarded_in_bulk,
            )  # fmt: skip
        if ordered:
            statements = [modes.in_order(self.mode, record) for record in records]
            outcomes = in_order(self._target(collection, self.mode), statements)
        else:
            outcomes = self._unordered(collection, records)
        if self._check_conflicts:
            mark_conflicts(collection, records, outcomes, self._check_budget)
        return outcomes

    def _target(self, collection: Collection[Document], mode: WriteMode) -> Target:
        """Inserts: a stored _id is a redelivery; upserts: a concurrent write of it."""
        same_id = DUPLICATE if mode is WriteMode.INSERT_ONCE else CONCURRENT
        return Target(collection, same_id, self._indexes)

    def _hang_up_reason(self) -> str:
        reason = "the database closed the connection each time this record was written"
        with contextlib.suppress(SinkUnavailable):
            if self.is_ferretdb:
                reason += " (FerretDB does so for values it cannot store, e.g. Decimal128 or NaN)"
        return reason

    def _unordered(
        self, collection: Collection[Document], records: Sequence[Record]
    ) -> list[Outcome]:
        if self.mode is WriteMode.MERGE:
            return bulk(self._target(collection, self.mode), [modes.merge(r) for r in records])
        inserts = self._target(collection, WriteMode.INSERT_ONCE)
        outcomes = bulk(inserts, [modes.insert(r) for r in records])
        if self.mode is WriteMode.REPLACE:
            stored = [i for i, o in enumerate(outcomes) if o.kind is OutcomeKind.DUPLICATE]
            # In order: two records of one _id in a batch end as the later one.
            replaced = in_order(
                self._target(collection, self.mode), [modes.replace(records[i]) for i in stored]
            )
            for index, outcome in zip(stored, replaced, strict=True):
                outcomes[index] = outcome
        return outcomes

    # ------------------------------------------------------------ operator tools

    def collection_counts(self) -> dict[str, int]:
        try:
            names = sorted(self._db.list_collection_names())
            return {
                name: self._db[name].estimated_document_count()
                for name in names
                if not name.startswith(INTERNAL_PREFIX)
            }
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    def prepare(self, collections: Sequence[str]) -> list[str]:
        try:
            existing = set(self._db.list_collection_names())
            for name in collections:
                if name not in existing:
                    self._db.create_collection(name)
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        # The pipeline's own (`ingest check`'s probe, the replica board) are not the user's.
        return sorted(n for n in set(collections) | existing if not n.startswith(INTERNAL_PREFIX))

    def check_write(self) -> None:
        """Writes and removes one document: does this user have write permission here?"""
        probe = self._db[CHECK_COLLECTION]
        try:
            marker = probe.insert_one({"check": "ingest check"}).inserted_id
            probe.delete_one({"_id": marker})
        except OperationFailure as exc:
            raise SinkUnavailable(
                f"{self.where} refused a test write: {server_reason(exc.code, exc.details or {}, str(exc))}"
            ) from exc
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc

    def replica_board(self) -> MongoReplicaBoard:
        return MongoReplicaBoard(self._db[REPLICAS_COLLECTION])

    # --------------------------------------------------------------- retention

    def expire(self, collections: Sequence[str], retention: Retention) -> None:
        for name in collections:
            try:
                _expire(self._db[name], retention)
            except OperationFailure as exc:
                reason = server_reason(exc.code, exc.details or {}, str(exc))
                hint = " (FerretDB does not expire documents)" if self._ferretdb_says() else ""
                raise SinkRefused(
                    f"{self.where} refused to expire {name} by {retention.field}: {reason}{hint}"
                ) from exc
            except PyMongoError as exc:
                raise self._unavailable(exc) from exc

    def _ferretdb_says(self) -> bool:
        with contextlib.suppress(SinkUnavailable):
            return self.is_ferretdb
        return False

    def retention(self, collection: str) -> Retention | None:
        try:
            indexes = list(self._db[collection].list_indexes())
        except PyMongoError as exc:
            raise self._unavailable(exc) from exc
        for index in indexes:
            keys = list(index["key"])
            if "expireAfterSeconds" in index and len(keys) == 1:
                return Retention(keys[0], int(index["expireAfterSeconds"]))
        return None


def _key(record: Record) -> Any:
    try:
        return id_key(record_id(record))
    except (BSONError, KeyError):
        return id(record)


def _fill(outcomes: list[Outcome], indexes: list[int], found: list[Outcome]) -> None:
    for index, outcome in zip(indexes, found, strict=True):
        outcomes[index] = outcome


def _expire(collection: Collection[Document], retention: Retention) -> None:
    """A TTL index on the field; an index already on it gets this period (collMod)."""
    field, seconds = retention.field, retention.seconds
    index = next(
        (i for i in collection.list_indexes() if list(i["key"]) == [field] and field != "_id"),
        None,
    )
    if index is None:
        collection.create_index([(field, ASCENDING)], expireAfterSeconds=seconds)
    elif index.get("expireAfterSeconds") != seconds:
        collection.database.command(
            "collMod", collection.name,
            index={"keyPattern": dict(index["key"]), "expireAfterSeconds": seconds},
        )  # fmt: skip


class MongoReplicaBoard:
    """Each replica upserts {_id, seen} with the server's $currentDate; "now" is the
    server's hello.localTime. Works on MongoDB and FerretDB."""

    def __init__(self, collection: Collection[Document]) -> None:
        self._collection = collection

    def check_in(self, replica: str, status: Mapping[str, Any]) -> None:
        try:
            self._collection.update_one(
                {"_id": replica},
                {"$currentDate": {"seen": True}, "$set": dict(status)},
                upsert=True,
            )
        except PyMongoError as exc:
            raise SinkUnavailable(f"replica check-in failed: {type(exc).__name__}") from exc

    def live(self, within_seconds: float) -> list[dict[str, Any]]:
        try:
            since = self._server_time() - datetime.timedelta(seconds=within_seconds)
            return list(self._collection.find({"seen": {"$gt": since}}).sort("_id"))
        except PyMongoError as exc:
            raise SinkUnavailable(f"reading replicas failed: {type(exc).__name__}") from exc

    def _server_time(self) -> datetime.datetime:
        hello = self._collection.database.client.admin.command("hello")
        local = hello.get("localTime")
        if isinstance(local, datetime.datetime):
            return local
        return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # tolerate: ours

    def leave(self, replica: str) -> None:
        try:
            self._collection.delete_one({"_id": replica})
        except PyMongoError as exc:
            raise SinkUnavailable(f"replica leave failed: {type(exc).__name__}") from exc
