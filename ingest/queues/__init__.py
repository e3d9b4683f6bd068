"""The queue seam: one protocol (base), SQS behind it (sqs), and an in-memory twin
(memory). Stages and operator tools speak only the protocol."""

from ingest.queues.base import (
    DEAD_LETTER_ATTRIBUTES,
    NO_REASON,
    REASON_ATTRIBUTE,
    SOURCE_MESSAGE_ATTRIBUTE,
    SOURCE_QUEUE_ATTRIBUTE,
    DeadLetter,
    Message,
    MessageQueue,
    MoveTask,
    Outgoing,
    QueueDepth,
    QueueService,
)
from ingest.queues.memory import MemoryQueue, MemoryService

__all__ = [
    "DEAD_LETTER_ATTRIBUTES",
    "NO_REASON",
    "REASON_ATTRIBUTE",
    "SOURCE_MESSAGE_ATTRIBUTE",
    "SOURCE_QUEUE_ATTRIBUTE",
    "DeadLetter",
    "MemoryQueue",
    "MemoryService",
    "Message",
    "MessageQueue",
    "MoveTask",
    "Outgoing",
    "QueueDepth",
    "QueueService",
]
