"""What flows between the stages: decoded messages in, settlements out."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.queues.base import DeadLetter, Message
from producer.wire import BadRecord, Record


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record that decoded but must not be written (routing, a hook), and why."""

    record: Record
    reason: str


@dataclass(slots=True)
class DecodedMessage:
    """A message after decoding: its good records, its bad lines, or why it is unreadable."""

    message: Message
    records: list[Record] = field(default_factory=list)
    bad_records: list[BadRecord] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    error: str | None = None  # set when the whole message is unreadable


@dataclass(slots=True)
class Settlement:
    """What the acknowledge stage must do for one write batch."""

    delete: list[Message] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # Messages whose dead letters must be sent before they are deleted.
    delete_after_dead_letter: list[Message] = field(default_factory=list)
    retry: list[Message] = field(default_factory=list)
    release: list[Message] = field(default_factory=list)  # visible again at once
