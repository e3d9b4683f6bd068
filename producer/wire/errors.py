"""The producer's error tree starts here, with the format's own errors, so that the
format stands alone: importing it loads no other part of the producer."""

from __future__ import annotations


class ProducerError(Exception):
    """Base class of every error the producer raises on purpose."""


class WireError(ProducerError, ValueError):
    """A malformed message or record. Its text is the reason the consumer puts on the
    dead-lettered message, written for whoever sent the record."""


class RecordTooLarge(WireError):
    """A single record does not fit in one message of the configured size."""
