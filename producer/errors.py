"""Errors raised by the producer. Wire-format errors come from producer.wire."""

from __future__ import annotations

from .wire import RecordTooLarge, WireError

__all__ = ["BufferFull", "ProducerClosed", "ProducerError", "RecordTooLarge", "WireError"]


class ProducerError(Exception):
    """Base class of the producer's own errors."""


class BufferFull(ProducerError):
    """The in-memory buffer is at max_buffered_bytes and the overflow policy
    is "raise", or "block" waited block_timeout without room appearing."""


class ProducerClosed(ProducerError):
    """send() after close()."""
