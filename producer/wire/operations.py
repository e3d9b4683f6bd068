"""Operations: an update or a delete of one document by its `_id`, travelling beside the
inserts (docs/wire-format.md, "Operations").

An operation is one BSON document, its envelope, with `_id` first:

    {"_id": <the document's _id>, "op": "update" | "delete", "id": ObjectId(...),
     "v": <version>, "u": {<update operators>}}

`id` is the operation's own id: the consumer applies an operation whose id the document
has already applied only once. `v` orders it: present, the operation applies only over
a lower stored version; absent (updates only), it applies exactly once, in any order.
`u` is an update document of MongoDB's operators ($inc, $set, ...), updates only.

Both sides check what the format promises (the consumer again, for other writers);
what only the server can judge (an unknown operator, a field clash, $inc of a string)
is left to it, and what it refuses is dead-lettered with its own reason."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from bson.datetime_ms import DatetimeMS
from bson.objectid import ObjectId

from .errors import WireError

UPDATE: Final = "update"
DELETE: Final = "delete"
KINDS: Final = (UPDATE, DELETE)
#: The consumer's own field in documents that operations touch (recent operation ids,
#: the version when no --version-field is set): never the sender's to write.
META_FIELD: Final = "_ingest"


@dataclass(frozen=True, slots=True)
class Operation:
    kind: str  # UPDATE or DELETE
    target: Any  # the _id of the document it applies to
    id: ObjectId  # its own id: applied once per document
    version: Any = None  # None: an update applied exactly once in any order
    update: Mapping[str, Any] | None = None  # updates: MongoDB's update operators

    @property
    def ordered(self) -> bool:
        return self.version is not None


def envelope(operation: Operation) -> dict[str, Any]:
    """The operation as the document that travels (`_id` first)."""
    document: dict[str, Any] = {"_id": operation.target, "op": operation.kind, "id": operation.id}
    if operation.version is not None:
        document["v"] = operation.version
    if operation.update is not None:
        document["u"] = operation.update
    return document


def read_envelope(document: Mapping[str, Any]) -> Operation:
    """The operation an envelope stands for. Raises WireError with the reason."""
    if "_id" not in document:
        raise WireError("operation has no _id (the document it applies to)")
    target = document["_id"]
    if isinstance(target, list):
        raise WireError("_id must not be an array")
    kind = document.get("op")
    if kind not in KINDS:
        raise WireError(f"operation kind must be 'update' or 'delete', not {_shown(kind)}")
    op_id = document.get("id")
    if not isinstance(op_id, ObjectId):
        raise WireError("operation id ('id') must be an ObjectId")
    unknown = set(document) - {"_id", "op", "id", "v", "u"}
    if unknown:
        raise WireError(f"operation has unknown fields: {', '.join(sorted(unknown))[:100]}")
    version = document.get("v")
    if version is not None and (problem := version_problem(version)):
        raise WireError(problem)
    if kind == DELETE:
        if "u" in document:
            raise WireError("a delete carries no update document ('u')")
        return Operation(DELETE, target, op_id, op_id if version is None else version)
    update = document.get("u")
    if not isinstance(update, Mapping):
        raise WireError("an update needs its update document ('u') of MongoDB operators")
    if problem := update_problem(update):
        raise WireError(problem)
    return Operation(UPDATE, target, op_id, version, update)


def version_problem(value: Any) -> str | None:
    """Why `value` cannot order operations: versions are numbers (not NaN, not booleans),
    dates or ObjectIds; the server compares them with $lt, never across types."""
    if isinstance(value, bool):
        return "version must be a number, a date or an ObjectId, not a boolean"
    if isinstance(value, int | float):
        return None if math.isfinite(value) else "version must be a finite number"
    if isinstance(value, datetime.datetime | DatetimeMS | ObjectId):
        return None
    return f"version must be a number, a date or an ObjectId, not {type(value).__name__}"


def update_problem(update: Mapping[str, Any]) -> str | None:
    """What the format refuses in an update document: no operator, a field that is not
    an operator (MongoDB would replace the document), an operator's argument that is
    not a document, or a field of the consumer's own (META_FIELD)."""
    if not update:
        return "update document is empty: give at least one operator, e.g. {'$set': {...}}"
    for operator, fields in update.items():
        if not isinstance(operator, str) or not operator.startswith("$"):
            return (
                f"update document key {_shown(operator)} is not an operator: use"
                f" {{'$set': {{{_shown(operator)}: ...}}}} to set a field"
            )
        if not isinstance(fields, Mapping):
            return f"{operator} takes a document of fields, not {type(fields).__name__}"
    for path in updated_paths(update):
        if path == META_FIELD or path.startswith(META_FIELD + "."):
            return f"field {META_FIELD} is the consumer's own: updates must not write {path[:60]}"
    return None


def updated_paths(update: Mapping[str, Any]) -> Iterator[str]:
    """The field paths an update document writes ($rename: both names)."""
    for operator, fields in update.items():
        if not isinstance(fields, Mapping):
            continue
        for path, value in fields.items():
            yield str(path)
            if operator == "$rename" and isinstance(value, str):
                yield value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
