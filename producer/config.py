"""The producer's options, checked once at construction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Final

from . import wire
from .errors import ConfigError
from .journal import FSYNC_POLICIES

OVERFLOW_POLICIES: Final = ("journal", "block", "raise")
SQS_MAX_MESSAGE_BYTES: Final = 1024 * 1024  # SQS's own limit, per message and per batch
MIN_MESSAGE_BYTES: Final = 1024
DEFAULT_BATCH_BYTES: Final = 256 * 1024
#: The payload bucket when Producer() is given none (the consumer reads it too).
PAYLOAD_BUCKET_VARIABLE: Final = "INGEST_PAYLOAD_BUCKET"


@dataclass(frozen=True, slots=True)
class Config:
    queue_urls: tuple[str, ...]
    max_message_bytes: int = 64 * 1024  # one 64 KiB SQS billing chunk
    max_batch_bytes: int = 0  # 0: DEFAULT_BATCH_BYTES, or max_message_bytes when larger
    linger_seconds: float = 0.05
    wire_format: str = wire.BSON_RECORDS  # "2": BSON; "1": JSON Lines, for any other reader
    compression: str | None = None  # None: zstd for format 2, identity for format 1
    compression_level: int | None = None
    max_buffered_bytes: int = 64 * 1024 * 1024
    overflow: str = "journal"
    block_timeout: float = 1.0
    exit_flush_timeout: float = 5.0
    journal_fsync: str = "always"
    max_attempts: int = 4  # SendMessageBatch attempts before the journal takes the records
    retry_initial_seconds: float = 0.05
    retry_max_seconds: float = 2.0
    breaker_threshold: int = 3
    breaker_reset_seconds: float = 10.0
    probe_seconds: float = 1.0  # how often to try replaying the journal while it has records
    # How often a producer with nothing journaled looks for segments that another process
    # (a sibling worker that died or exited during an outage) left behind unreplayed.
    journal_scan_seconds: float = 10.0
    # Records too large for one SQS message go to this S3 bucket, and a pointer to them
    # through SQS (producer/offload.py). None: such records are refused at send().
    payload_bucket: str | None = None

    def __post_init__(self) -> None:
        if not self.queue_urls or not all(isinstance(u, str) and u for u in self.queue_urls):
            raise ConfigError("queue_url must be a URL or a non-empty sequence of URLs")
        for url in self.queue_urls:
            _check_queue_url(url)
        if len({url.endswith(".fifo") for url in self.queue_urls}) > 1:
            raise ConfigError("queues must be all FIFO or all standard")
        self._check_sizes()
        if self.payload_bucket is not None:
            problem = wire.bucket_name_problem(self.payload_bucket)
            if problem:
                raise ConfigError(f"payload_bucket: {problem}")
        _check_choice("wire_format", self.wire_format, wire.FORMATS)
        if self.compression is not None:
            _check_choice("compression", self.compression, wire.ENCODINGS)
        if self.encoding == wire.ZSTD:
            try:
                import zstandard  # noqa: F401
            except ImportError as exc:
                raise ValueError("zstd compression needs the 'zstandard' package") from exc
        _check_choice("overflow", self.overflow, OVERFLOW_POLICIES)
        _check_choice("journal_fsync", self.journal_fsync, FSYNC_POLICIES)
        if self.linger_seconds < 0 or self.block_timeout < 0 or self.exit_flush_timeout < 0:
            raise ConfigError("linger_seconds, block_timeout and exit_flush_timeout must be >= 0")
        if self.probe_seconds <= 0 or self.journal_scan_seconds <= 0:
            raise ConfigError("probe_seconds and journal_scan_seconds must be > 0")
        if self.max_attempts < 1 or self.breaker_threshold < 1:
            raise ConfigError("max_attempts and breaker_threshold must be >= 1")
        if self.max_buffered_bytes < self.max_message_bytes:
            raise ConfigError("max_buffered_bytes must be at least max_message_bytes")

    def _check_sizes(self) -> None:
        """Any combination up to SQS's limits goes; a wrong one names what to change."""
        message, batch = self.max_message_bytes, self.max_batch_bytes
        if not MIN_MESSAGE_BYTES <= message <= SQS_MAX_MESSAGE_BYTES:
            raise ConfigError(
                f"max_message_bytes={message}: must be {MIN_MESSAGE_BYTES} to "
                f"{SQS_MAX_MESSAGE_BYTES} (SQS's limit for one message)"
            )
        if batch == 0:  # not given: room for a full message, and a few of the default size
            object.__setattr__(self, "max_batch_bytes", max(DEFAULT_BATCH_BYTES, message))
        elif batch > SQS_MAX_MESSAGE_BYTES:
            raise ConfigError(
                f"max_batch_bytes={batch}: lower it to {SQS_MAX_MESSAGE_BYTES} or less "
                "(SQS's limit for one SendMessageBatch)"
            )
        elif batch < message:
            raise ConfigError(
                f"max_batch_bytes={batch} is below max_message_bytes={message}: raise "
                f"max_batch_bytes to {message} or more (or leave it out), or lower max_message_bytes"
            )

    @property
    def encoding(self) -> str:
        if self.compression is not None:
            return self.compression
        return wire.ZSTD if self.wire_format == wire.BSON_RECORDS else wire.IDENTITY

    @property
    def fifo(self) -> bool:
        return self.queue_urls[0].endswith(".fifo")


def with_environment(options: dict[str, Any]) -> dict[str, Any]:
    """The options, with the payload bucket from the environment when not given."""
    if "payload_bucket" not in options:
        options["payload_bucket"] = os.environ.get(PAYLOAD_BUCKET_VARIABLE) or None
    return options


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


def _check_queue_url(url: str) -> None:
    if not wire.is_queue_url(url):
        raise ConfigError(
            f"queue_url {url!r} is not a queue URL ({wire.QUEUE_URL_FORM})", setting="queue_url"
        )
