"""One tree of error classes for the consumer."""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error the consumer raises on purpose."""


class ConfigError(IngestError):
    """Settings are missing or contradict each other."""


class QueueUnavailable(IngestError):
    """SQS did not answer or refused a call; the operation may be retried."""


class SinkUnavailable(IngestError):
    """The document store is down or refused the whole write: retry everything later.

    Distinct from a per-record rejection, which dead-letters only that record."""
