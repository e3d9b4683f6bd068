"""The producer's errors: one tree under ProducerError, the format's WireError included."""

from __future__ import annotations

from .wire.errors import ProducerError, RecordTooLarge, WireError

__all__ = [
    "BufferFull",
    "ConfigError",
    "ProducerClosed",
    "ProducerError",
    "RecordTooLarge",
    "WireError",
]


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
