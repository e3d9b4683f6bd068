"""update() and delete() as operations: checked at the call, given their id, and ordered
or not (docs/producer.md, "Updates and deletes").

Each operation gets an ObjectId of its own, and the consumer applies it to a document at
most once. An ordered operation applies only over a lower stored version: its
`version=`, or by default its own id. An ObjectId is the time in seconds, five random
bytes drawn once per process, and a counter, so one process's ids grow with every call:
the default version orders one producer's operations on one document. Across
processes it orders by the second only: within the same second, two producers' ids
compare by their random bytes, not by which call came first (give `version=` when that
matters). Updates made only of operators whose effect does not depend on when they
run among their own kind (counters, high-water marks, sets) are not ordered by
default: every one of them counts, exactly once, whatever order they arrive in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from bson.objectid import ObjectId

from . import wire
from .errors import RecordRefused

#: MongoDB's update operators (https://www.mongodb.com/docs/manual/reference/operator/update/).
OPERATORS: Final = frozenset(
    {"$currentDate", "$inc", "$min", "$max", "$mul", "$rename", "$set", "$setOnInsert",
     "$unset", "$addToSet", "$pop", "$pull", "$push", "$pullAll", "$bit"}
)  # fmt: skip
#: Not ordered by default: each one counts, whatever order they arrive in ($push keeps
#: the arrival order in the array; $setOnInsert only acts on the write that creates).
ACCUMULATING: Final = frozenset(
    {"$inc", "$mul", "$min", "$max", "$addToSet", "$push", "$bit", "$setOnInsert"}
)


def update(
    target: Any,
    document: Mapping[str, Any],
    version: Any = None,
    ordered: bool | None = None,
    *,
    operation_id: ObjectId | None = None,
) -> wire.Operation:
    """An update of the document `target` (its _id). Raises RecordRefused, one line.
    `operation_id`: a given id (a backfill's, the same on every run) instead of a new one."""
    _check_target(target)
    if not isinstance(document, Mapping):
        raise RecordRefused(f"update must be a dict of operators, got {type(document).__name__}")
    if problem := wire.update_problem(document):
        raise RecordRefused(problem)
    unknown = sorted(str(op) for op in document if op not in OPERATORS)
    if unknown:
        raise RecordRefused(f"unknown update operator {unknown[0][:40]}: use one of MongoDB's")
    for path in wire.updated_paths(document):
        if path == "_id" or path.startswith("_id."):
            raise RecordRefused("an update must not change _id (it names the document)")
    if version is not None:
        _check_version(version)
        if ordered is False:
            raise RecordRefused("version= orders an update: leave it out to apply it in any order")
    elif ordered is None:
        ordered = not set(document) <= ACCUMULATING
    op_id = operation_id or ObjectId()
    if ordered and version is None:
        version = op_id  # the default version
    return wire.Operation(wire.UPDATE, target, op_id, version, dict(document))


def delete(
    target: Any, version: Any = None, *, operation_id: ObjectId | None = None
) -> wire.Operation:
    """A delete of the document `target`: ordered, by `version` or its own id."""
    _check_target(target)
    if version is not None:
        _check_version(version)
    op_id = operation_id or ObjectId()
    return wire.Operation(wire.DELETE, target, op_id, op_id if version is None else version)


def _check_target(target: Any) -> None:
    if target is None:
        raise RecordRefused("give the _id of the document to change")
    if isinstance(target, list):
        raise RecordRefused("_id must not be an array")


def _check_version(version: Any) -> None:
    if problem := wire.version_problem(version):
        raise RecordRefused(problem)
