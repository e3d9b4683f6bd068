"""The producer library: a non-blocking, write-buffering SQS sender for web apps.

    from producer import Producer
    producer = Producer("https://sqs.eu-west-1.amazonaws.com/123456789012/ingest")
    producer.send("events", {"kind": "click"})  # returns the new ObjectId at once

See docs/producer.md. Names are loaded when first used, so that importing the format
alone (`producer.wire`, as the consumer does) loads nothing else and registers no
exit or fork hooks."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aio import AsyncProducer
    from .checks import RecordChecker
    from .core import Producer
    from .errors import (
        BufferFull,
        ConfigError,
        ProducerClosed,
        ProducerError,
        RecordRefused,
        RecordTooLarge,
        WireError,
    )
    from .metrics import Stats

_WHERE = {
    "AsyncProducer": ".aio",  # loads asyncio (~40 ms): a WSGI app that never uses it should not pay
    "Producer": ".core",
    "RecordChecker": ".checks",
    "BufferFull": ".errors",
    "ConfigError": ".errors",
    "ProducerClosed": ".errors",
    "ProducerError": ".errors",
    "RecordRefused": ".errors",
    "RecordTooLarge": ".errors",
    "WireError": ".errors",
    "Stats": ".metrics",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'producer' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "AsyncProducer",
    "BufferFull",
    "ConfigError",
    "Producer",
    "ProducerClosed",
    "ProducerError",
    "RecordChecker",
    "RecordRefused",
    "RecordTooLarge",
    "Stats",
    "WireError",
    "operations",  # update and delete as operations, built apart from a Producer (backfill)
]
