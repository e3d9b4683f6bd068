"""The producer library: a non-blocking, write-buffering SQS sender for web apps.

    from producer import Producer
    producer = Producer("https://sqs.eu-west-1.amazonaws.com/123456789012/ingest")
    producer.send("events", {"kind": "click"})  # returns the new ObjectId at once

See docs/producer.md."""

from typing import TYPE_CHECKING, Any

from .core import Producer
from .errors import BufferFull, ProducerClosed, ProducerError, RecordTooLarge, WireError
from .metrics import Stats

if TYPE_CHECKING:
    from .aio import AsyncProducer


def __getattr__(name: str) -> Any:
    # AsyncProducer loads asyncio (~40 ms); a WSGI app that never uses it should not pay.
    if name == "AsyncProducer":
        from .aio import AsyncProducer

        return AsyncProducer
    raise AttributeError(f"module 'producer' has no attribute {name!r}")


__all__ = [
    "AsyncProducer",
    "BufferFull",
    "Producer",
    "ProducerClosed",
    "ProducerError",
    "RecordTooLarge",
    "Stats",
    "WireError",
]
