"""The producer's errors: one tree under ProducerError, the format's WireError included."""

from __future__ import annotations

from .wire.errors import ProducerError, RecordTooLarge, WireError

__all__ = ["BufferFull", "ProducerClosed", "ProducerError", "RecordTooLarge", "WireError"]


class BufferFull(ProducerError):
    """The in-memory buffer is at max_buffered_bytes and the overflow policy
    is "raise", or "block" waited block_timeout without room appearing."""


class ProducerClosed(ProducerError):
    """send() after close()."""
