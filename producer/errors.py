"""The producer's errors: one tree under ProducerError.

ProducerError
├── RecordRefused    send() refused the record: what MongoDB refuses, or what cannot
│   │                travel (also a producer.wire.WireError: the format's rule said so)
│   └── RecordTooLarge   too large for a message, and no payload bucket for it
├── BufferFull       memory is full and the overflow policy says raise (or block ran out)
├── ProducerClosed   send() after close()
└── ConfigError      Producer() was given something it cannot work with (also a ValueError)
"""

from __future__ import annotations

from .wire.errors import WireError

__all__ = [
    "BufferFull",
    "ConfigError",
    "ProducerClosed",
    "ProducerError",
    "RecordRefused",
    "RecordTooLarge",
    "WireError",
]


class ProducerError(Exception):
    """Base class of every error the producer raises on purpose."""


class RecordRefused(ProducerError, WireError):
    """send() refused the record. Its text is what the consumer would put on it as the
    reason, had it been sent."""


class RecordTooLarge(RecordRefused):
    """A single record does not fit in one message, and there is no payload bucket."""


class BufferFull(ProducerError):
    """The in-memory buffer is at max_buffered_bytes and the overflow policy
    is "raise", or "block" waited block_timeout without room appearing."""


class ProducerClosed(ProducerError):
    """send() after close()."""


class ConfigError(ProducerError, ValueError):
    """Producer() was given something it cannot work with: not a queue URL, a journal
    directory it cannot write, an option out of range. Raised at construction.
    `setting`: the option to change, where one is to blame (e.g. "journal_dir")."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
