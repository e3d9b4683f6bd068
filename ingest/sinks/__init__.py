"""The sink seam: one protocol (base), MongoDB behind it (mongo), and an in-memory twin
(memory). Only this package speaks pymongo's write API."""

from ingest.sinks.base import (
    DUPLICATE,
    STALE,
    WRITTEN,
    ConflictPolicy,
    DocumentSink,
    DocumentStore,
    Outcome,
    OutcomeKind,
    ReplicaBoard,
    Retention,
    WriteMode,
    conflict,
    rejected,
    retry,
)

__all__ = [
    "DUPLICATE",
    "STALE",
    "WRITTEN",
    "ConflictPolicy",
    "DocumentSink",
    "DocumentStore",
    "Outcome",
    "OutcomeKind",
    "ReplicaBoard",
    "Retention",
    "WriteMode",
    "conflict",
    "rejected",
    "retry",
]
