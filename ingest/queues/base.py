"""The queue seam: what the pipeline and the operator tools need from SQS.

Two implementations keep the same contract (tests/contract/test_queue_contract.py):
`SqsQueue` (SQS or ElasticMQ, through boto3) and `MemoryQueue`, which keeps the
semantics that matter here (visibility timeout, receive counts, redrive after
maxReceiveCount, receipt handles that change on redelivery)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from producer import wire

T = TypeVar("T")

REASON_ATTRIBUTE: Final = "ingest-dead-letter-reason"
#: Failed attempts so far, carried by a message the consumer sends again in place of one
#: that failed (ingest/pipeline/settle.py): SQS's receive count starts again at 0 there.
ATTEMPTS_ATTRIBUTE: Final = "ingest-attempts"
SOURCE_QUEUE_ATTRIBUTE: Final = "ingest-source-queue"
SOURCE_MESSAGE_ATTRIBUTE: Final = "ingest-source-message-id"
#: What the consumer adds when it dead-letters a message (a redrive takes them off).
DEAD_LETTER_ATTRIBUTES: Final = (
    REASON_ATTRIBUTE, SOURCE_QUEUE_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE, ATTEMPTS_ATTRIBUTE,
)  # fmt: skip
#: Receives SQS may count that the consumer never saw (an answer lost on the way): a
#: message is settled that many receives before SQS's own redrive would move it.
LOST_RECEIVE_SLACK: Final = 1
#: SQS's limit on DelaySeconds.
MAX_DELAY_SECONDS: Final = 900
NO_REASON: Final = "(no reason attribute: SQS moved it after maxReceiveCount receives)"
MAX_REASON_CHARS: Final = 1000
SQS_BATCH_LIMIT: Final = 10
#: SendMessageBatch's total on every SQS flavour, with room for the attributes.
SQS_BATCH_BYTES: Final = 200 * 1024
# Attributes kept when a message is dead-lettered, so a redrive can decode it again (a
# pointer's size attribute marks its body as a pointer to the payload in S3).
_CARRIED_ATTRIBUTES: Final = (
    wire.FORMAT_ATTRIBUTE, wire.ENCODING_ATTRIBUTE, *wire.POINTER_ATTRIBUTES,
)  # fmt: skip


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
    sent_at: float | None = None  # epoch seconds, SQS's own SentTimestamp
    visible_until: float = 0.0  # monotonic; maintained by the heartbeat
    max_receive_count: int = 0  # the queue's redrive policy; 0: SQS never moves it

    @property
    def last_receive(self) -> bool:
        """SQS may move this message to the dead-letter queue, without a reason, instead
        of delivering it again: whatever must happen to it must happen now. One receive
        short of the count, since a receive whose answer was lost on the way counts too."""
        return 0 < self.max_receive_count <= self.receive_count + LOST_RECEIVE_SLACK

    def attribute(self, name: str) -> str | None:
        return wire.attribute_value(self.attributes, name)

    @property
    def attempts(self) -> int:
        """Failed attempts carried from the messages this one replaces (0: none)."""
        raw = self.attribute(ATTEMPTS_ATTRIBUTE)
        return int(raw) if raw is not None and raw.isdigit() and len(raw) < 6 else 0

    @property
    def fifo(self) -> bool:
        return self.queue_url.endswith(".fifo")

    @property
    def reason(self) -> str:
        """Why it was dead-lettered (for messages read from a dead-letter queue)."""
        return self.attribute(REASON_ATTRIBUTE) or NO_REASON


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What goes to the dead-letter queue: the original body (or one record) and why."""

    source: Message
    body: str
    reason: str
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resend:
    """A message sent again in place of `source`: its whole body, or only the records of it
    that must be tried again, with the attempts so far. The source is deleted afterwards
    (by the acknowledge stage), once everything sent in its place was taken."""

    source: Message
    body: str
    attributes: Mapping[str, Any]
    delay_seconds: int = 0  # standard queues only (at most 900); FIFO keeps its order instead


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send. FIFO queues need the group and deduplication ids."""

    body: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    dedup_id: str | None = None
    delay_seconds: int = 0


@dataclass(frozen=True, slots=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.in_flight + self.delayed


@dataclass(frozen=True, slots=True)
class MoveTask:
    """SQS's own move of every message from a dead-letter queue back to its source."""

    handle: str
    status: str  # RUNNING, COMPLETED, CANCELLED, FAILED
    moved: int


class MessageQueue(Protocol):
    """One queue. Batch calls return the entries that failed; a call SQS does not
    answer raises QueueUnavailable (QueueRefused when it answers and refuses)."""

    url: str
    dead_letter_url: str | None
    max_receive_count: int  # 0: no redrive policy

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]: ...

    def delete(self, messages: Sequence[Message]) -> list[Message]: ...

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]: ...

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Outgoing]: ...

    def send(self, body: str, attributes: Mapping[str, Any] | None = None) -> str: ...

    def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        """Sends each letter to the dead-letter queue with its reason attached."""
        ...

    def resend(self, resends: Sequence[Resend]) -> list[Resend]:
        """Sends each as a new message (receive count 0); returns those SQS did not take.
        Deletes nothing: the sources are deleted by the caller."""
        ...

    def depth(self) -> QueueDepth: ...

    def dead_letter_depth(self) -> QueueDepth | None:
        """The dead-letter queue's depth; None when the queue has none."""
        ...

    def purge(self) -> None: ...


class QueueService(Protocol):
    """The SQS endpoint as a whole: finding, creating and moving between queues."""

    def queue(self, url: str, dead_letter_url: str | None = None) -> MessageQueue:
        """The queue at `url`, its dead-letter queue and maxReceiveCount read from its
        redrive policy (`dead_letter_url` overrides the dead-letter queue)."""
        ...

    def create(
        self,
        name: str,
        *,
        visibility_timeout: int = 30,
        max_receive_count: int = 5,
        retention_seconds: int = 1209600,
        kms_key_id: str | None = None,
    ) -> MessageQueue:
        """The queue `name` and `<name>-dlq` with a redrive policy. Idempotent:
        existing queues get these attributes."""
        ...

    def start_move(self, source_url: str, destination_url: str) -> str:
        """Starts moving every message from source to destination; returns a handle."""
        ...

    def move_status(self, source_url: str, handle: str) -> MoveTask: ...


def dead_letter_attributes(letter: DeadLetter) -> wire.Attributes:
    """The letter's format attributes (so a redrive decodes it again), its reason and
    where it came from."""
    attributes: wire.Attributes = {}
    for name in _CARRIED_ATTRIBUTES:
        value = wire.attribute_value(letter.attributes, name)
        if value is not None:
            kind = "Number" if name in wire.POINTER_ATTRIBUTES else "String"
            attributes[name] = {"DataType": kind, "StringValue": value}
    attributes[REASON_ATTRIBUTE] = wire.string_attribute(
        letter.reason[:MAX_REASON_CHARS] or "unknown"
    )
    attributes[SOURCE_QUEUE_ATTRIBUTE] = wire.string_attribute(letter.source.queue_url)
    attributes[SOURCE_MESSAGE_ATTRIBUTE] = wire.string_attribute(letter.source.message_id)
    return attributes


def sendable_attributes(attributes: Mapping[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """Received MessageAttributes as SendMessage takes them, without the names in `drop`."""
    kept = ("DataType", "StringValue", "BinaryValue")
    return {
        name: {k: v for k, v in value.items() if k in kept}
        for name, value in attributes.items()
        if isinstance(value, Mapping) and name not in drop
    }


def resend_attributes(
    attributes: Mapping[str, Any], attempts: int, carried: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`attributes` as SendMessage takes them, with the attempts so far; `carried`: the
    source's attributes to keep beside them (its partition key, for a record resent alone)."""
    kept = sendable_attributes(carried or {}, drop=(*attributes, ATTEMPTS_ATTRIBUTE))
    kept.update(sendable_attributes(attributes, drop=(ATTEMPTS_ATTRIBUTE,)))
    kept[ATTEMPTS_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(attempts)}
    return kept


_QUEUE_NAME_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
)
_QUEUE_NAME_MAX: Final = 80


def queue_name_problem(name: str) -> str | None:
    """What SQS would refuse in a queue name `create` makes, with its dead-letter
    queue's name: 1-80 letters, digits, '-' and '_', a FIFO queue's ending '.fifo'."""
    stem = name.removesuffix(".fifo")
    if not stem or not set(stem) <= _QUEUE_NAME_CHARS:
        return (
            f"queue name {name[:90]!r}: SQS takes only letters, digits, '-' and '_' "
            "(and '.fifo' at the end of a FIFO queue's name)"
        )
    longest = max(len(name), len(dead_letter_name(name)))
    if longest > _QUEUE_NAME_MAX:
        return (
            f"queue name {name[:90]!r}: SQS takes at most {_QUEUE_NAME_MAX} characters, "
            f"and its dead-letter queue's name {dead_letter_name(name)!r} needs {longest}"
        )
    return None


def dead_letter_name(name: str) -> str:
    """The dead-letter queue `create` makes beside queue `name`: `<name>-dlq`, FIFO kept."""
    fifo = name.endswith(".fifo")
    return f"{name.removesuffix('.fifo')}-dlq{'.fifo' * fifo}"


def chunks(items: Sequence[T], size: int = SQS_BATCH_LIMIT) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def send_groups(messages: Sequence[Outgoing]) -> Iterator[list[Outgoing]]:
    """SendMessageBatch calls of at most 10 entries and SQS_BATCH_BYTES."""
    # + 2048: the attributes, generously
    return wire.bounded_groups(
        messages, lambda m: len(m.body.encode()) + 2048, SQS_BATCH_BYTES, SQS_BATCH_LIMIT
    )
