"""One tree of error classes for the consumer and its tools.

IngestError
├── ConfigError          settings are missing, out of range, or contradict each other
├── QueueUnavailable     SQS did not answer (or answered 5xx / throttled): retry later
├── QueueRefused         SQS answered, and refused (no such queue, access denied)
├── SinkUnavailable      MongoDB did not answer: retry everything later
│                        (a record it refuses is an outcome, not an error)
├── SinkRefused          MongoDB answered, and refused (not implemented, not allowed)
├── PayloadUnavailable   S3 did not answer (or answered 5xx / throttled): a message whose
│                        payload is there is handed back, no attempt counted
└── ToolError            an operator tool cannot go on (backfill, checkpoint, input)
    ├── BackfillError
    ├── CheckpointError
    └── ReaderError
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error the consumer raises on purpose. Its text is one line,
    written for whoever has to act on it."""


class ConfigError(IngestError):
    """Settings are missing, out of range, or contradict each other."""


class QueueUnavailable(IngestError):
    """SQS did not answer, or failed the call as its own problem; it may be retried."""


class QueueRefused(IngestError):
    """SQS answered and refused the call (no such queue, access denied, bad request)."""


class SinkUnavailable(IngestError):
    """The document store does not answer: retry everything later.

    Distinct from a per-record rejection, which dead-letters only that record."""


class SinkRefused(IngestError):
    """The document store answered and refused an operator's request (an index it
    does not implement, a command this user may not run)."""


class PayloadUnavailable(IngestError):
    """The payload store (S3) does not answer: a message whose body is kept there is
    handed back for later, no attempt counted. A payload it answers cannot be had is a
    bad record instead (ingest.payloads.PayloadRefused)."""


class ToolError(IngestError):
    """An operator tool cannot go on."""


class BackfillError(ToolError):
    """The backfill cannot go on; the checkpoint stays at the last safe point."""


class CheckpointError(ToolError):
    """The checkpoint file is unreadable or belongs to another queue."""


class ReaderError(ToolError):
    """The input as a whole cannot be read (no such path, unknown format)."""


#: For the calls whose failure, either way, means "it did not happen": the message stays
#: where it is and comes back (a delete, a visibility change, a send, a depth for a gauge).
QUEUE_CALL_FAILED = (QueueUnavailable, QueueRefused)
