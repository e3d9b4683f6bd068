"""What flows between the stages: decoded messages in, settlements out."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.queues.base import DeadLetter, Message, Resend
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
    # Set when handling the message failed as a whole in a way that may pass: tried again,
    # within the attempt bound (ingest/pipeline/settle.py).
    failure: str | None = None


@dataclass(slots=True)
class Settlement:
    """What the acknowledge stage must do for one write batch (decided in settle.py)."""

    delete: list[Message] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    resends: list[Resend] = field(default_factory=list)
    # Deleted once every dead letter and resend in their place was sent (else tried again).
    delete_after_sends: list[Message] = field(default_factory=list)
    retry: list[tuple[Message, int]] = field(default_factory=list)  # visible after the delay
    release: list[Message] = field(default_factory=list)  # visible again at once

    def extend(self, other: Settlement) -> None:
        self.delete += other.delete
        self.dead_letters += other.dead_letters
        self.resends += other.resends
        self.delete_after_sends += other.delete_after_sends
        self.retry += other.retry
        self.release += other.release

    def messages(self) -> list[Message]:
        """Every message this settlement is about."""
        retried = [message for message, _ in self.retry]
        return self.delete + self.delete_after_sends + retried + self.release
