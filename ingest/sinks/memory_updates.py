"""MongoDB's update operators on a dict, for the in-memory sink: the same results, and
the server's own words for what it refuses (a clash of paths, a change of _id, $inc of
a string), so that both sinks pass the same contract tests.

Written here rather than taken from a library: mongomock 4.3 and montydb 2.5 (the two
there are) were tried, and both apply `$addToSet` with `$each` wrongly (duplicates kept),
and mongomock accepts a clash of paths that MongoDB refuses. Covered: $set, $unset,
$inc, $mul, $min, $max, $setOnInsert, $currentDate, $rename, $push ($each, $slice,
$position), $addToSet ($each), $pop, $pull and $pullAll by equal values; the rest
($bit, $pull with a condition) are refused by name."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Mapping
from typing import Any, Final

from ingest.sinks.documents import type_name

Document = dict[str, Any]
_MISSING: Final = object()


class UpdateRefused(Exception):
    """What MongoDB would refuse, in its words (its code first)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"refused by the database (error {code}): {message}")


def apply_update(
    document: Mapping[str, Any], update: Mapping[str, Any], *, inserting: bool
) -> Document:
    """`update` applied to a copy of `document`. Raises UpdateRefused."""
    _check_paths(update)
    result = copy.deepcopy(dict(document))
    for operator, fields in update.items():
        apply = _OPERATORS.get(operator)
        if apply is None:
            raise UpdateRefused(
                9, f"Unknown modifier: {operator}. Expected a valid update modifier"
            )
        for path, argument in fields.items():
            if operator == "$setOnInsert" and not inserting:
                continue
            apply(result, str(path), argument)
    return result


def _check_paths(update: Mapping[str, Any]) -> None:
    paths: list[str] = []
    for operator, fields in update.items():
        for path, value in fields.items():
            paths.append(str(path))
            if operator == "$rename" and isinstance(value, str):
                paths.append(value)
    for path in paths:
        if path == "_id" or path.startswith("_id."):
            raise UpdateRefused(
                66, "Performing an update on the path '_id' would modify the immutable field '_id'"
            )
    for number, second in enumerate(paths):
        for first in paths[:number]:
            if first == second or second.startswith(first + "."):
                raise UpdateRefused(
                    40, f"Updating the path '{second}' would create a conflict at '{first}'"
                )
            if first.startswith(second + "."):
                raise UpdateRefused(
                    40, f"Updating the path '{first}' would create a conflict at '{second}'"
                )


def _parent(document: Document, path: str, *, create: bool) -> tuple[Any, str]:
    """The container holding the last part of `path`, and that part."""
    parts = path.split(".")
    node: Any = document
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise UpdateRefused(28, f"Cannot create field '{part}' in element {_shown(node)}")
        if part not in node:
            if not create:
                return None, parts[-1]
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict | list):
        raise UpdateRefused(28, f"Cannot create field '{parts[-1]}' in element {_shown(node)}")
    return node, parts[-1]


def _get(document: Document, path: str) -> Any:
    node, last = _parent(document, path, create=False)
    if isinstance(node, dict):
        return node.get(last, _MISSING)
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        return node[int(last)]
    return _MISSING


def _put(document: Document, path: str, value: Any) -> None:
    node, last = _parent(document, path, create=True)
    if isinstance(node, list):
        index = int(last) if last.isdigit() else -1
        if not 0 <= index < len(node):
            raise UpdateRefused(2, f"cannot use the part ({last}) to traverse the array")
        node[index] = value
    else:
        node[last] = value


def _set(document: Document, path: str, value: Any) -> None:
    _put(document, path, copy.deepcopy(value))


def _unset(document: Document, path: str, _: Any) -> None:
    node, last = _parent(document, path, create=False)
    if isinstance(node, dict):
        node.pop(last, None)


def _numeric(operator: str, verb: str) -> Callable[[Document, str, Any], None]:
    def apply(document: Document, path: str, argument: Any) -> None:
        if not _is_number(argument):
            raise UpdateRefused(
                14, f"Cannot {verb} with non-numeric argument: {{{path}: {_shown(argument)}}}"
            )
        current = _get(document, path)
        if current is _MISSING:
            _put(document, path, 0 * argument if operator == "$mul" else argument)
        elif not _is_number(current):
            raise UpdateRefused(
                14,
                f"Cannot apply {operator} to a value of non-numeric type. {{_id: "
                f"{_shown(document.get('_id'))}}} has the field '{path.split('.')[-1]}' of"
                f" non-numeric type {type_name(current)}",
            )
        else:
            _put(document, path, current + argument if operator == "$inc" else current * argument)

    return apply


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bound(keep_lower: bool) -> Callable[[Document, str, Any], None]:
    def apply(document: Document, path: str, argument: Any) -> None:
        current = _get(document, path)
        try:
            replace = current is _MISSING or (
                argument < current if keep_lower else argument > current
            )
        except TypeError:  # different BSON types: MongoDB orders them by type; rare here
            replace = False
        if replace:
            _set(document, path, argument)

    return apply


def _current_date(document: Document, path: str, _: Any) -> None:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    _put(document, path, now.replace(microsecond=now.microsecond // 1000 * 1000))


def _rename(document: Document, path: str, target: Any) -> None:
    value = _get(document, path)
    if value is _MISSING:
        return
    _unset(document, path, None)
    _put(document, str(target), value)


def _array(document: Document, path: str, operator: str) -> list[Any]:
    current = _get(document, path)
    if current is _MISSING:
        current = []
        _put(document, path, current)
    if not isinstance(current, list):
        raise UpdateRefused(
            2,
            f"The field '{path}' must be an array but is of type {type_name(current)} in"
            f" document {{_id: {_shown(document.get('_id'))}}}",
        )
    return current


def _each(argument: Any) -> tuple[list[Any], Mapping[str, Any]]:
    if isinstance(argument, Mapping) and "$each" in argument:
        return list(argument["$each"]), argument
    return [argument], {}


def _push(document: Document, path: str, argument: Any) -> None:
    items, modifiers = _each(argument)
    array = _array(document, path, "$push")
    position = modifiers.get("$position")
    if isinstance(position, int):
        array[position:position] = copy.deepcopy(items)
    else:
        array.extend(copy.deepcopy(items))
    limit = modifiers.get("$slice")
    if isinstance(limit, int):
        array[:] = array[limit:] if limit < 0 else array[:limit]
        if limit == 0:
            array.clear()


def _add_to_set(document: Document, path: str, argument: Any) -> None:
    items, _ = _each(argument)
    array = _array(document, path, "$addToSet")
    for item in items:
        if item not in array:
            array.append(copy.deepcopy(item))


def _pop(document: Document, path: str, argument: Any) -> None:
    current = _get(document, path)
    if current is _MISSING:
        return
    array = _array(document, path, "$pop")
    if array:
        array.pop(0 if argument == -1 else -1)


def _pull(document: Document, path: str, argument: Any) -> None:
    if isinstance(argument, Mapping) and any(str(key).startswith("$") for key in argument):
        raise UpdateRefused(2, "the in-memory sink pulls equal values only, not by a condition")
    _pull_all(document, path, [argument])


def _pull_all(document: Document, path: str, argument: Any) -> None:
    if _get(document, path) is _MISSING:
        return
    array = _array(document, path, "$pullAll")
    array[:] = [item for item in array if item not in list(argument)]


def _not_here(operator: str) -> Callable[[Document, str, Any], None]:
    def apply(document: Document, path: str, argument: Any) -> None:
        raise UpdateRefused(2, f"the in-memory sink does not implement {operator}")

    return apply


_OPERATORS: Final[dict[str, Callable[[Document, str, Any], None]]] = {
    "$set": _set, "$setOnInsert": _set, "$unset": _unset,
    "$inc": _numeric("$inc", "increment"), "$mul": _numeric("$mul", "multiply"),
    "$min": _bound(True), "$max": _bound(False), "$currentDate": _current_date,
    "$rename": _rename, "$push": _push, "$addToSet": _add_to_set, "$pop": _pop,
    "$pull": _pull, "$pullAll": _pull_all, "$bit": _not_here("$bit"),
}  # fmt: skip


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
