"""The values that flow between stages: messages in, outcomes out."""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from producer.wire import BadRecord, Record


@dataclass(slots=True, eq=False)
class Message:
    """One received SQS message. The receipt handle changes if SQS redelivers."""

    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    attributes: Mapping[str, Any] = field(default_factory=dict)  # MessageAttributes
    receive_count: int = 1
    group_id: str | None = None
    received_at: float = field(default_factory=time.monotonic)
    visible_until: float = 0.0  # monotonic; maintained by the heartbeat
    max_receive_count: int = 0  # the queue's redrive policy; 0: SQS never moves it

    @property
    def last_receive(self) -> bool:
        """SQS moves this message to the dead-letter queue, without a reason, instead of
        delivering it again: whatever must happen to it must happen now."""
        return 0 < self.max_receive_count <= self.receive_count


class OutcomeKind(enum.Enum):
    WRITTEN = "written"
    DUPLICATE = "duplicate"  # an earlier write of the same _id won; nothing to do
    REJECTED = "rejected"  # permanent: dead-letter this record with the reason
    RETRY = "retry"  # transient: write it again later


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""

    @property
    def settled(self) -> bool:
        """True when the record needs no further write."""
        return self.kind is not OutcomeKind.RETRY


WRITTEN = Outcome(OutcomeKind.WRITTEN)
DUPLICATE = Outcome(OutcomeKind.DUPLICATE)


def rejected(reason: str) -> Outcome:
    return Outcome(OutcomeKind.REJECTED, reason)


def retry(reason: str) -> Outcome:
    return Outcome(OutcomeKind.RETRY, reason)


@dataclass(slots=True)
class DecodedMessage:
    """A message after decoding: its good records, its bad lines, or why it is unreadable."""

    message: Message
    records: list[Record] = field(default_factory=list)
    bad_records: list[BadRecord] = field(default_factory=list)
    error: str | None = None  # set when the whole message is unreadable


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What goes to the dead-letter queue: the original body (or one record line) and why."""

    source: Message
    body: str
    reason: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Settlement:
    """What the acknowledge stage must do for one write batch."""

    delete: list[Message] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # Messages whose dead letters must be sent before they are deleted.
    delete_after_dead_letter: list[Message] = field(default_factory=list)
    retry: list[Message] = field(default_factory=list)
    release: list[Message] = field(default_factory=list)  # visible again at once
