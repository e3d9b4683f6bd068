"""Routing: which collections a record may be written to, and per-collection hooks.

The format already refuses system collections and names with '$' or NUL; this
stage adds the operator's allow-list and optional hooks (an import path such as
``myapp.hooks:check_audit``) that may validate or transform a record. A hook that
raises dead-letters that record only."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from ingest.errors import ConfigError
from ingest.pipeline.messages import Refusal
from producer.wire import Record, record_id

Hook = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Router:
    allowed: frozenset[str] = frozenset()  # empty with no prefixes: every collection
    prefixes: tuple[str, ...] = ()
    hooks: Mapping[str, Hook] = field(default_factory=dict)

    def route(self, record: Record) -> Record | Refusal:
        """The record to write (maybe transformed by its hook), or why it must not be."""
        if not self.allows(record.collection):
            return Refusal(
                record, f"collection {record.collection[:60]!r} is not in the allow-list"
            )
        hook = self.hooks.get(record.collection)
        if hook is None or record.operation is not None:
            return record  # hooks judge documents; operations are the server's to judge
        try:
            result = hook(_editable(record.document))
        except Exception as exc:  # a hook's failure is about this record only
            why = str(exc) or type(exc).__name__
            return Refusal(record, f"hook for {record.collection!r} rejected the record: {why}")
        if result is None:
            return record
        if not isinstance(result, dict) or result.get("_id") != record_id(record):
            why = "must return a document with the same _id"
            return Refusal(record, f"hook for {record.collection!r} {why}")
        return replace(record, document=result)

    def allows(self, collection: str) -> bool:
        if not self.allowed and not self.prefixes:
            return True
        return collection in self.allowed or collection.startswith(self.prefixes)

    @property
    def is_open(self) -> bool:
        return not self.allowed and not self.prefixes and not self.hooks


def _editable(document: Mapping[str, Any]) -> dict[str, Any]:
    """A hook may change the document: a BSON one (format 2) is decoded for it."""
    if isinstance(document, RawBSONDocument):
        return bson.decode(document.raw)
    return document if isinstance(document, dict) else dict(document)


def build_router(
    allowed: Sequence[str] = (),
    prefixes: Sequence[str] = (),
    hooks: Mapping[str, str] | None = None,
) -> Router:
    """`hooks`: collection -> import path (``package.module:function``)."""
    return Router(
        frozenset(allowed),
        tuple(prefixes),
        {name: load_hook(path) for name, path in (hooks or {}).items()},
    )


def load_hook(path: str) -> Hook:
    module_name, sep, attribute = path.partition(":")
    if not sep:
        raise ConfigError(f"hook {path!r} must look like package.module:function")
    try:
        hook = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load hook {path!r}: {exc}") from exc
    if not callable(hook):
        raise ConfigError(f"hook {path!r} is not callable")
    return hook  # type: ignore[no-any-return]
