"""Updates and deletes on MongoDB, as statements in one unordered bulk
(ingest/sinks/operations.py says what they mean).

- an unordered update: `{_id, _ingest.ops: {$ne: id}}` and the update with
  `$push: {_ingest.ops: {$each: [id], $slice: -recent}}`, upserting;
- an ordered update: `{_id, $or: [{V: {$lt: version}}, {V: {$exists: false}}]}` and the
  update with `$set: {V: version}`, upserting;
- a delete: its tombstone first (mongo_tombstones.py), then `{_id, <the same guard>}`.

A filter that does not match makes the upsert's insert hit the _id: a duplicate-key
error, after which a read of the stored document says why (mongo_clashes.py tells it
from a clash on another unique index first). A delete that removed nothing is read too:
gone already, or overtaken by a newer write (stale).

FerretDB 1.24 ignores `$slice` (and `$pull` with a condition): where the server shows
it (once, on its own answer), each applied update is followed by a `$pop` of the oldest
id from documents holding more than `recent`. Its reply to a bulk with a refused
update cannot be read (mongo_bulk.py sends each statement again on its own); the
operations are idempotent, so that only turns some into duplicates."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from ingest.sinks.base import (
    DUPLICATE,
    INTERNAL_PREFIX,
    WRITTEN,
    Outcome,
    OutcomeKind,
    rejected,
    retry,
)
from ingest.sinks.modes import Document, Kind, Statement
from ingest.sinks.mongo_bulk import Tally, Target, bulk
from ingest.sinks.mongo_claims import Claims
from ingest.sinks.mongo_clashes import UniqueIndexes
from ingest.sinks.mongo_tombstones import Tombstones
from ingest.sinks.operations import (
    GONE,
    OPS_FIELD,
    against,
    consumer_problem,
    judge_update,
    lookup,
)
from ingest.sinks.versions import guard
from producer.wire import DELETE, META_FIELD, Operation, Record

log = logging.getLogger(__name__)
PROBE_PREFIX: Final = "ingest-slice-probe-"


class Operations:
    """The write of one round of operations (each _id at most once) to one collection."""

    def __init__(
        self,
        tombstones: Tombstones,
        version_path: str,
        version_field: str | None,
        recent: int,
        indexes: UniqueIndexes,
    ) -> None:
        self.tombstones = tombstones
        self._path = version_path
        self._version_field = version_field
        self.recent = recent
        self._indexes = indexes
        self._lock = threading.Lock()
        self.slice_honoured: bool | None = None  # None: not asked of the server yet
        self.claims = Claims()

    def write(self, collection: Collection[Document], records: Sequence[Record]) -> list[Outcome]:
        ops: list[Operation] = [r.operation for r in records if r.operation is not None]
        assert len(ops) == len(records)
        outcomes: list[Outcome] = [WRITTEN] * len(ops)
        todo: list[int] = []
        for index, op in enumerate(ops):
            problem = consumer_problem(op, self._version_field)
            if problem:
                outcomes[index] = rejected(problem)
            else:
                todo.append(index)
        probe = collection.database.get_collection(PROBE_COLLECTION)
        if not todo or not self.claims.required(probe):
            self._write(collection, ops, todo, outcomes)
            return outcomes
        never = self.claims.each_held(
            collection,
            [ops[i].target for i in todo],
            lambda held: self._write(collection, ops, [todo[n] for n in held], outcomes),
        )
        for n in never:
            outcomes[todo[n]] = HELD_ELSEWHERE
        return outcomes

    def _write(
        self,
        collection: Collection[Document],
        ops: list[Operation],
        todo: list[int],
        outcomes: list[Outcome],
    ) -> None:
        todo = self._tombstones_first(collection, ops, todo, outcomes)
        tally = Tally()
        statements = [self._statement(ops[i]) for i in todo]
        found = bulk(Target(collection, DUPLICATE, self._indexes), statements, tally=tally)
        for index, outcome in zip(todo, found, strict=True):
            outcomes[index] = outcome
        self._judge_refused(collection, ops, todo, outcomes)
        self._judge_deletes(collection, ops, todo, outcomes, tally)
        self._trim(collection, [ops[i] for i in todo if _applied_once(ops[i], outcomes[i])])

    def _tombstones_first(
        self,
        collection: Collection[Document],
        ops: list[Operation],
        todo: list[int],
        outcomes: list[Outcome],
    ) -> list[int]:
        deletes = [i for i in todo if ops[i].kind == DELETE]
        if not deletes:
            return todo
        verdicts = self.tombstones.write(collection, [ops[i] for i in deletes])
        settled = set()
        for index, verdict in zip(deletes, verdicts, strict=True):
            if verdict is not None:  # refused: a newer tombstone, or one to retry
                outcomes[index] = verdict
                settled.add(index)
        return [i for i in todo if i not in settled]

    def _statement(self, op: Operation) -> Statement:
        if op.kind == DELETE:
            return Statement(Kind.DELETE, op.target, None, {"_id": op.target, **self._guard(op)})
        update = dict(op.update or {})
        if op.ordered:
            update["$set"] = {**update.get("$set", {}), self._path: op.version}
            where = {"_id": op.target, **self._guard(op)}
        else:
            push = {"$each": [op.id], "$slice": -self.recent}
            update["$push"] = {**update.get("$push", {}), OPS_FIELD: push}
            where = {"_id": op.target, OPS_FIELD: {"$ne": op.id}}
        return Statement(Kind.UPDATE, op.target, update, where, guarded=True)

    def _guard(self, op: Operation) -> dict[str, Any]:
        return guard(self._path, op.version)

    def _judge_refused(
        self,
        collection: Collection[Document],
        ops: list[Operation],
        todo: list[int],
        outcomes: list[Outcome],
    ) -> None:
        """Updates whose filter did not match: a read of each stored document says why."""
        refused = [
            i for i in todo if ops[i].kind != DELETE and outcomes[i].kind is OutcomeKind.DUPLICATE
        ]
        fields = {META_FIELD: 1, self._path: 1}
        for index in refused:
            stored = collection.find_one({"_id": ops[index].target}, fields)
            outcomes[index] = judge_update(ops[index], stored, self._path)

    def _judge_deletes(
        self,
        collection: Collection[Document],
        ops: list[Operation],
        todo: list[int],
        outcomes: list[Outcome],
        tally: Tally,
    ) -> None:
        """Deletes all removed their document, or each is read: gone (written), or kept
        by a version that is not lower (stale, or refused for another kind)."""
        deletes = [
            i for i in todo if ops[i].kind == DELETE and outcomes[i].kind is OutcomeKind.WRITTEN
        ]
        if not deletes or tally.removed == len(deletes):
            return
        for index in deletes:
            stored = collection.find_one({"_id": ops[index].target}, {self._path: 1})
            if stored is not None:
                outcomes[index] = (
                    against(ops[index].version, lookup(stored, self._path), self._path) or GONE
                )

    def _trim(self, collection: Collection[Document], applied: list[Operation]) -> None:
        """Where the server ignores $slice: one $pop of the oldest id per id pushed, from
        documents that hold more than `recent` (the others match nothing)."""
        if not applied or self._slice_honoured(collection):
            return
        longer = f"{OPS_FIELD}.{self.recent}"
        pops = [
            UpdateOne({"_id": op.target, longer: {"$exists": True}}, {"$pop": {OPS_FIELD: -1}})
            for op in applied
        ]
        try:
            collection.bulk_write(pops, ordered=False)
        except (PyMongoError, KeyError, TypeError) as exc:  # applied already: only the trim waits
            log.warning("could not trim %d documents' recent operation ids: %s", len(pops), exc)

    def _slice_honoured(self, collection: Collection[Document]) -> bool:
        """Does the server keep `$push`'s `$slice`? Asked once, of its own answer, on a
        document of the pipeline's own collection (written and removed)."""
        with self._lock:
            if self.slice_honoured is None:
                self.slice_honoured = slice_honoured(
                    collection.database.get_collection(PROBE_COLLECTION)
                )
            return self.slice_honoured


PROBE_COLLECTION: Final = INTERNAL_PREFIX + "check"  # the sink's own (`ingest check`'s)
HELD_ELSEWHERE: Final = retry("another writer held this _id throughout: tried again later")


def slice_honoured(collection: Collection[Document]) -> bool:
    probe = PROBE_PREFIX + uuid.uuid4().hex
    try:
        for value in range(3):
            collection.update_one(
                {"_id": probe}, {"$push": {"ids": {"$each": [value], "$slice": -2}}}, upsert=True
            )
        stored = collection.find_one({"_id": probe})
        return isinstance(stored, Mapping) and stored.get("ids") == [1, 2]
    finally:
        collection.delete_one({"_id": probe})


def _applied_once(op: Operation, outcome: Outcome) -> bool:
    """An unordered update that pushed its id."""
    return not op.ordered and op.kind != DELETE and outcome.kind is OutcomeKind.WRITTEN
