"""The producer library: a non-blocking, write-buffering SQS sender for web apps.

    from producer import Producer
    producer = Producer("https://sqs.eu-west-1.amazonaws.com/123456789012/ingest")
    producer.send("events", {"kind": "click"})  # returns the new ObjectId at once

See docs/producer.md."""

from .aio import AsyncProducer
from .core import Producer
from .errors import BufferFull, ProducerClosed, ProducerError, RecordTooLarge, WireError
from .metrics import Stats

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
