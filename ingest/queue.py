"""The queue the consumer drains: a small protocol, SQS behind it, and an in-memory twin.

The in-memory queue keeps SQS's semantics that matter here (visibility timeout,
receive counts, redrive to a dead-letter queue after maxReceiveCount, receipt
handles that change on redelivery), so the same contract tests run on both."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ingest.errors import QueueUnavailable
from ingest.messages import DeadLetter, Message
from producer import wire
from producer.wire import bounded_groups

T = TypeVar("T")

REASON_ATTRIBUTE: Final = "ingest-dead-letter-reason"
SOURCE_QUEUE_ATTRIBUTE: Final = "ingest-source-queue"
SOURCE_MESSAGE_ATTRIBUTE: Final = "ingest-source-message-id"
MAX_REASON_CHARS: Final = 1000
SQS_BATCH_LIMIT: Final = 10
# Attributes kept when a message is dead-lettered, so a redrive can decode it again.
_CARRIED_ATTRIBUTES: Final = (wire.FORMAT_ATTRIBUTE, wire.ENCODING_ATTRIBUTE)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int


class MessageQueue(Protocol):
    """What the pipeline needs from a queue. Batch calls return the entries that failed."""

    url: str

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]: ...

    def delete(self, messages: Sequence[Message]) -> list[Message]: ...

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]: ...

    def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]: ...

    def requeue(self, messages: Sequence[Message]) -> list[Message]:
        """Sends each message again as a new one (receive count 0), then deletes the
        original: for a message at its last receive that is not at fault."""
        ...

    def send(self, body: str, attributes: Mapping[str, Any] | None = None) -> str: ...

    def depth(self) -> QueueDepth: ...


def dead_letter_attributes(letter: DeadLetter) -> dict[str, dict[str, str]]:
    attributes: dict[str, dict[str, str]] = {}
    for name in _CARRIED_ATTRIBUTES:
        value = wire.attribute_value(letter.attributes, name)
        if value is not None:
            attributes[name] = {"DataType": "String", "StringValue": value}
    reason = letter.reason[:MAX_REASON_CHARS] or "unknown"
    attributes[REASON_ATTRIBUTE] = {"DataType": "String", "StringValue": reason}
    attributes[SOURCE_QUEUE_ATTRIBUTE] = {
        "DataType": "String",
        "StringValue": letter.source.queue_url,
    }
    attributes[SOURCE_MESSAGE_ATTRIBUTE] = {
        "DataType": "String",
        "StringValue": letter.source.message_id,
    }
    return attributes


def chunks(items: Sequence[T], size: int = SQS_BATCH_LIMIT) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ----------------------------------------------------------------------- SQS


class SqsQueue:
    """A real SQS queue (or ElasticMQ) through a boto3 client."""

    def __init__(
        self,
        url: str,
        client: Any,
        dead_letter_url: str | None = None,
        max_receive_count: int = 0,
    ) -> None:
        self.url = url
        self.dead_letter_url = dead_letter_url
        self.max_receive_count = max_receive_count  # from the redrive policy; 0: none
        self._client = client

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]:
        response = self._call(
            "receive_message",
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
        )
        now = time.monotonic()
        return [self._message(raw, now, visibility_timeout) for raw in response.get("Messages", [])]

    def _message(self, raw: Mapping[str, Any], now: float, visibility: int) -> Message:
        system = raw.get("Attributes", {})
        return Message(
            queue_url=self.url,
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw.get("Body", ""),
            attributes=raw.get("MessageAttributes", {}),
            receive_count=int(system.get("ApproximateReceiveCount", 1)),
            group_id=system.get("MessageGroupId"),
            received_at=now,
            visible_until=now + visibility,
            max_receive_count=self.max_receive_count,
        )

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        failed: list[Message] = []
        for part in chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(part)
            ]
            response = self._call("delete_message_batch", QueueUrl=self.url, Entries=entries)
            failed.extend(part[int(f["Id"])] for f in response.get("Failed", []))
        return failed

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]:
        failed: list[Message] = []
        for part in chunks(entries):
            request = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                for i, (m, seconds) in enumerate(part)
            ]
            response = self._call(
                "change_message_visibility_batch", QueueUrl=self.url, Entries=request
            )
            failed.extend(part[int(f["Id"])][0] for f in response.get("Failed", []))
        return failed

    def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        if not self.dead_letter_url:
            return list(letters)
        failed: list[DeadLetter] = []
        for part in _size_bounded(letters):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": letter.body,
                    "MessageAttributes": dead_letter_attributes(letter),
                    **_fifo_fields(self.dead_letter_url, letter),
                }
                for i, letter in enumerate(part)
            ]
            try:
                response = self._call(
                    "send_message_batch", QueueUrl=self.dead_letter_url, Entries=entries
                )
            except QueueUnavailable:
                failed.extend(part)
                continue
            failed.extend(part[int(f["Id"])] for f in response.get("Failed", []))
        return failed

    def requeue(self, messages: Sequence[Message]) -> list[Message]:
        unsent: list[Message] = []
        sent: list[Message] = []
        for part in chunks(messages):
            entries = [_requeue_entry(str(i), m) for i, m in enumerate(part)]
            try:
                response = self._call("send_message_batch", QueueUrl=self.url, Entries=entries)
            except QueueUnavailable:
                unsent.extend(part)
                continue
            failed = {int(f["Id"]) for f in response.get("Failed", [])}
            unsent.extend(m for i, m in enumerate(part) if i in failed)
            sent.extend(m for i, m in enumerate(part) if i not in failed)
        with contextlib.suppress(QueueUnavailable):
            self.delete(sent)  # an undeleted original comes back; its records collapse
        return unsent

    def send(self, body: str, attributes: Mapping[str, Any] | None = None) -> str:
        response = self._call(
            "send_message", QueueUrl=self.url, MessageBody=body, MessageAttributes=attributes or {}
        )
        return str(response["MessageId"])

    def depth(self) -> QueueDepth:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attrs = self._call("get_queue_attributes", QueueUrl=self.url, AttributeNames=names)[
            "Attributes"
        ]
        return QueueDepth(*(int(attrs.get(name, 0)) for name in names))

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise QueueUnavailable(f"SQS {operation} failed: {exc}") from exc


def _size_bounded(
    letters: Sequence[DeadLetter], limit: int = 256 * 1024
) -> Iterator[list[DeadLetter]]:
    """Split into SendMessageBatch calls of at most 10 entries and `limit` bytes."""
    # + 2048: the attributes, generously
    return bounded_groups(letters, lambda d: len(d.body.encode()) + 2048, limit, SQS_BATCH_LIMIT)


def _requeue_entry(entry_id: str, message: Message) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": message.body,
        "MessageAttributes": _sendable(message.attributes),
    }
    if message.queue_url.endswith(".fifo"):
        entry["MessageGroupId"] = message.group_id or "requeued"
        entry["MessageDeduplicationId"] = f"{message.message_id}-{message.receive_count}"[-128:]
    return entry


def _sendable(attributes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Received MessageAttributes as SendMessage takes them."""
    kept = ("DataType", "StringValue", "BinaryValue")
    return {
        name: {k: v for k, v in value.items() if k in kept}
        for name, value in attributes.items()
        if isinstance(value, Mapping)
    }


def _fifo_fields(url: str, letter: DeadLetter) -> dict[str, str]:
    if not url.endswith(".fifo"):
        return {}
    return {
        "MessageGroupId": letter.source.group_id or "dead-letter",
        "MessageDeduplicationId": uuid.uuid5(
            uuid.NAMESPACE_URL, letter.source.message_id + letter.body[:200]
        ).hex,
    }


# ------------------------------------------------------------------ in memory


@dataclass(slots=True)
class _Stored:
    message_id: str
    body: str
    attributes: Mapping[str, Any]
    group_id: str | None = None
    receipt: str = ""
    receive_count: int = 0
    visible_at: float = 0.0


@dataclass
class MemoryQueue:
    """SQS semantics in memory: for unit tests and for measuring the pipeline's overhead."""

    url: str = "memory://queue"
    max_receive_count: int = 0  # 0: never redrive
    dead_letter_queue: MemoryQueue | None = None
    _messages: dict[str, _Stored] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    receive_calls: int = 0

    def send(
        self, body: str, attributes: Mapping[str, Any] | None = None, group_id: str | None = None
    ) -> str:
        with self._cond:
            message_id = f"m-{next(self._ids)}"
            self._messages[message_id] = _Stored(message_id, body, dict(attributes or {}), group_id)
            self._cond.notify_all()
            return message_id

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]:
        deadline = time.monotonic() + wait_seconds
        with self._cond:
            self.receive_calls += 1
            while True:
                got = self._take(max_messages, visibility_timeout)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                self._cond.wait(min(remaining, 0.05))

    def _take(self, max_messages: int, visibility_timeout: int) -> list[Message]:
        now = time.monotonic()
        got: list[Message] = []
        for stored in list(self._messages.values()):
            if len(got) == max_messages:
                break
            if stored.visible_at > now:
                continue
            if self.max_receive_count and stored.receive_count >= self.max_receive_count:
                self._redrive(stored)
                continue
            stored.receive_count += 1
            stored.receipt = uuid.uuid4().hex
            stored.visible_at = now + visibility_timeout
            got.append(self._message(stored, now))
        return got

    def _message(self, stored: _Stored, now: float) -> Message:
        return Message(
            queue_url=self.url,
            message_id=stored.message_id,
            receipt_handle=stored.receipt,
            body=stored.body,
            attributes=stored.attributes,
            receive_count=stored.receive_count,
            group_id=stored.group_id,
            received_at=now,
            visible_until=stored.visible_at,
            max_receive_count=self.max_receive_count,
        )

    def _redrive(self, stored: _Stored) -> None:
        del self._messages[stored.message_id]
        if self.dead_letter_queue is not None:
            self.dead_letter_queue.send(stored.body, stored.attributes, stored.group_id)

    def _current(self, message: Message) -> _Stored | None:
        stored = self._messages.get(message.message_id)
        return stored if stored is not None and stored.receipt == message.receipt_handle else None

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        failed: list[Message] = []
        with self._cond:
            for message in messages:
                if self._current(message) is None:
                    failed.append(message)
                else:
                    del self._messages[message.message_id]
        return failed

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]:
        failed: list[Message] = []
        with self._cond:
            now = time.monotonic()
            for message, seconds in entries:
                stored = self._current(message)
                if stored is None:
                    failed.append(message)
                else:
                    stored.visible_at = now + seconds
            self._cond.notify_all()
        return failed

    def requeue(self, messages: Sequence[Message]) -> list[Message]:
        with self._cond:
            current = [m for m in messages if self._current(m) is not None]
        for message in current:
            self.send(message.body, message.attributes, message.group_id)
        self.delete(current)
        return [m for m in messages if m not in current]

    def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        if self.dead_letter_queue is None:
            return list(letters)
        for letter in letters:
            attributes = dead_letter_attributes(letter)
            self.dead_letter_queue.send(letter.body, attributes, letter.source.group_id)
        return []

    def depth(self) -> QueueDepth:
        with self._cond:
            now = time.monotonic()
            in_flight = sum(1 for s in self._messages.values() if s.visible_at > now)
            return QueueDepth(len(self._messages) - in_flight, in_flight, 0)

    def __len__(self) -> int:
        with self._cond:
            return len(self._messages)
