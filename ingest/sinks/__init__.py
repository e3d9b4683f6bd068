"""The sink seam: one protocol (base), MongoDB behind it (mongo), and an in-memory twin
(memory). Only this package speaks pymongo's write API."""

from ingest.sinks.base import (
    DUPLICATE,
    WRITTEN,
    DocumentSink,
    DocumentStore,
    Outcome,
    OutcomeKind,
    ReplicaBoard,
    WriteMode,
    rejected,
    retry,
)

__all__ = [
    "DUPLICATE",
    "WRITTEN",
    "DocumentSink",
    "DocumentStore",
    "Outcome",
    "OutcomeKind",
    "ReplicaBoard",
    "WriteMode",
    "rejected",
    "retry",
]
