"""What MongoDB (and this pipeline) accept as a collection and a document: checked by
the producer at send() and again by the consumer, with reasons for the sender."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from bson.errors import BSONError

from .errors import WireError

#: MongoDB's own limit on one document.
MAX_BSON_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
#: MongoDB rejects documents nested deeper than this.
MAX_NESTING_DEPTH: Final = 100
MAX_COLLECTION_NAME_BYTES: Final = 120


def check_collection_name(name: object) -> str:
    """Return ``name`` if MongoDB (and pymongo, which refuses more) accept it as a
    collection: the rule both sides apply, the producer at send() and the consumer to
    every name it reads from a message."""
    if not isinstance(name, str):
        raise WireError(f"collection must be a string, got {type(name).__name__}")
    if not name:
        raise WireError("collection name is empty")
    shown = _shown(name)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise WireError(f"collection name {shown} is not valid UTF-8") from None
    if size > MAX_COLLECTION_NAME_BYTES:
        raise WireError(f"collection name is longer than {MAX_COLLECTION_NAME_BYTES} bytes")
    if name.startswith("system."):
        raise WireError(f"collection name {shown} is reserved (system.*)")
    if "$" in name or "\x00" in name:
        raise WireError(f"collection name {shown} must not contain '$' or NUL")
    if name.startswith(".") or name.endswith("."):
        raise WireError(f"collection name {shown} must not start or end with '.'")
    if ".." in name:
        raise WireError(f"collection name {shown} must not contain '..'")
    return name


#: What MongoDB refuses in a database name (on any platform it runs on), and its length.
_DATABASE_NAME_REFUSES: Final = '/\\. "$*<>:|?\x00'
MAX_DATABASE_NAME_BYTES: Final = 63


def check_database_name(name: object) -> str:
    """Return ``name`` if MongoDB accepts it as a database."""
    if not isinstance(name, str) or not name:
        raise WireError("database name is empty")
    shown = _shown(name)
    refused = sorted({c for c in name if c in _DATABASE_NAME_REFUSES})
    if refused:
        listed = " ".join(repr(c) for c in refused)
        raise WireError(f"database name {shown} must not contain {listed}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise WireError(f"database name {shown} is not valid UTF-8") from None
    if size > MAX_DATABASE_NAME_BYTES:
        raise WireError(f"database name is longer than {MAX_DATABASE_NAME_BYTES} bytes")
    return name


def _shown(name: str) -> str:
    return repr(name[:60].encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace"))


def check_document(document: object) -> dict[str, Any]:
    """Reject what MongoDB would reject for the whole bulk write, or store oddly."""
    if not isinstance(document, dict):
        raise WireError(f"document must be a JSON object, got {type(document).__name__}")
    if "_id" not in document:
        raise WireError("document has no _id")
    if isinstance(document["_id"], list):
        raise WireError("_id must not be an array")
    for key in document:
        if not isinstance(key, str):
            raise WireError(f"document keys must be strings, got {type(key).__name__}")
        if key.startswith("$"):
            raise WireError(f"top-level key {key[:60]!r} starts with '$'")
    return document


_KNOWN_COLLECTIONS: set[str] = set()


_MAX_KNOWN_COLLECTIONS: Final = 10_000


def known_collection(name: object) -> str:
    """check_collection_name, remembered: a consumer sees the same few names all day."""
    if type(name) is str and name in _KNOWN_COLLECTIONS:  # str subclasses (bson Code) may not hash
        return name
    checked = check_collection_name(name)
    if type(checked) is not str:
        return checked
    if len(_KNOWN_COLLECTIONS) >= _MAX_KNOWN_COLLECTIONS:
        _KNOWN_COLLECTIONS.clear()  # bounded: a flood of distinct names costs re-checks only
    _KNOWN_COLLECTIONS.add(checked)
    return checked


def check_keys_and_depth(value: object, depth: int = 0) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise WireError(f"document is nested deeper than {MAX_NESTING_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise WireError("a key contains NUL")
            check_keys_and_depth(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_keys_and_depth(item, depth + 1)


def check_bson_size(document: dict[str, Any]) -> None:
    import bson

    try:
        size = len(bson.encode(document))
    except (BSONError, OverflowError, ValueError) as exc:
        raise WireError(bson_problem(exc, document)) from exc
    if size > MAX_BSON_DOCUMENT_BYTES:
        raise WireError(f"document is {size} bytes as BSON, over MongoDB's 16 MiB limit")


CLASS_REPR: Final = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>")


def bson_problem(exc: BaseException, document: Mapping[str, Any]) -> str:
    """Why `document` cannot become BSON, for the person who sent it (the driver's
    own text names Python types and classes)."""
    if isinstance(exc, OverflowError):
        big = _first(document, lambda v: type(v) is int and not -(2**63) <= v < 2**63)
        if big is None:
            return "a number does not fit in 64 bits"
        shown = f"2**{big.bit_length() - 1}" if big > 0 and big & (big - 1) == 0 else str(big)
        return (
            f"integer {shown if len(shown) <= 40 else shown[:37] + '...'} does not fit in 64 bits"
        )
    if isinstance(exc, UnicodeEncodeError):
        char = exc.object[exc.start : exc.start + 1] if isinstance(exc.object, str) else "?"
        return f"a string holds a lone surrogate (\\u{ord(char):04x}), which is not valid UTF-8"
    if type(exc).__name__ == "DocumentTooLarge":
        return "document is over MongoDB's 16 MiB limit"
    text = CLASS_REPR.sub(r"\1", str(exc).splitlines()[0] if str(exc) else "")
    return (
        f"document cannot be stored as BSON: {text[:200]}"
        if text
        else "document cannot be stored as BSON"
    )


def _first(value: object, test: Callable[[object], bool], depth: int = 0) -> Any:
    """The first value in a document (depth first) that passes `test`."""
    if test(value):
        return value
    if depth > MAX_NESTING_DEPTH:
        return None
    items = (
        value.values() if isinstance(value, Mapping) else value if isinstance(value, list) else ()
    )
    for item in items:
        found = _first(item, test, depth + 1)
        if found is not None:
            return found
    return None
