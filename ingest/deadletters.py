"""Dead-letter tools: look at dead letters without consuming them, move them back, purge.

Looking (`show`) receives with a visibility timeout long enough for one scan
(so each message is seen once), then makes every received message visible
again at once with ChangeMessageVisibility(0). Nothing is deleted; the only
trace is a higher ApproximateReceiveCount on the dead-letter queue, which has
no redrive policy of its own.

Moving back (`redrive`) uses SQS's own StartMessageMoveTask when every message
goes and the endpoint supports it (it moves messages as they are, attributes
included). With a reason filter, or where the task is refused, it moves them
itself: receive, send to the source queue with the message's attributes minus
the dead-letter ones, delete only what was sent, release what did not match.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from ingest.queue import (
    REASON_ATTRIBUTE,
    SOURCE_MESSAGE_ATTRIBUTE,
    SOURCE_QUEUE_ATTRIBUTE,
    SQS_BATCH_LIMIT,
    chunks,
)
from producer.wire import bounded_groups

log = logging.getLogger("ingest.deadletters")

NO_REASON: Final = "(no reason attribute: SQS moved it after maxReceiveCount receives)"
_DEAD_LETTER_ATTRIBUTES: Final = (
    REASON_ATTRIBUTE,
    SOURCE_QUEUE_ATTRIBUTE,
    SOURCE_MESSAGE_ATTRIBUTE,
)
_BATCH_BYTES: Final = 200 * 1024  # under SendMessageBatch's 256 KiB total on every SQS flavour


@dataclass(frozen=True, slots=True)
class DeadLetterMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, Any]
    reason: str
    source_queue: str | None
    sent_at: float | None  # epoch seconds: when it entered the dead-letter queue
    group_id: str | None = None

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> DeadLetterMessage:
        attributes = raw.get("MessageAttributes", {})
        system = raw.get("Attributes", {})
        sent = system.get("SentTimestamp")
        return cls(
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw.get("Body", ""),
            attributes=attributes,
            reason=_string(attributes, REASON_ATTRIBUTE) or NO_REASON,
            source_queue=_string(attributes, SOURCE_QUEUE_ATTRIBUTE),
            sent_at=int(sent) / 1000 if sent else None,
            group_id=system.get("MessageGroupId"),
        )


def _string(attributes: dict[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    return value.get("StringValue") if isinstance(value, dict) else None


def reason_matcher(substring: str | None = None, regex: str | None = None) -> Callable[[str], bool]:
    """A filter on the reason: substring (case-insensitive) or regular expression."""
    if substring and regex:
        raise ValueError("give a reason substring or a regex, not both")
    if regex:
        pattern = re.compile(regex)
        return lambda reason: pattern.search(reason) is not None
    if substring:
        folded = substring.casefold()
        return lambda reason: folded in reason.casefold()
    return lambda reason: True


# ----------------------------------------------------------------------- show


def _receive(client: Any, url: str, visibility: int, wait: int = 1) -> list[DeadLetterMessage]:
    response = client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=SQS_BATCH_LIMIT,
        WaitTimeSeconds=wait,
        VisibilityTimeout=visibility,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["SentTimestamp", "MessageGroupId"],
    )
    return [DeadLetterMessage.from_sqs(raw) for raw in response.get("Messages", [])]


def _scan(client: Any, url: str, visibility: int, limit: int | None) -> Iterator[DeadLetterMessage]:
    """Each visible message once; an empty long poll ends it (a long poll asks
    every SQS server, so unlike a short poll, empty means empty)."""
    seen: set[str] = set()
    count = 0
    while limit is None or count < limit:
        got = _receive(client, url, visibility)
        if not got:
            return
        for message in got:
            if message.message_id not in seen:
                seen.add(message.message_id)
                count += 1
            yield message


def release(client: Any, url: str, messages: Sequence[DeadLetterMessage]) -> None:
    for part in chunks(messages):
        entries = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
            for i, m in enumerate(part)
        ]
        failed = client.change_message_visibility_batch(QueueUrl=url, Entries=entries).get(
            "Failed", []
        )
        for entry in failed:  # visible again when the scan's visibility runs out anyway
            log.warning("could not release %s: %s", part[int(entry["Id"])].message_id, entry)


def peek(
    client: Any, url: str, limit: int | None = None, hold_seconds: int = 60
) -> list[DeadLetterMessage]:
    """Every message (up to limit), left in the queue and visible again on return."""
    held: list[DeadLetterMessage] = []
    unique: dict[str, DeadLetterMessage] = {}
    try:
        for message in _scan(client, url, hold_seconds, limit):
            held.append(message)
            unique.setdefault(message.message_id, message)
    finally:
        release(client, url, held)
    return list(unique.values())


def summarize(messages: Sequence[DeadLetterMessage], samples: int = 3) -> dict[str, Any]:
    counts = Counter(m.reason for m in messages)
    groups = []
    for reason, count in counts.most_common():
        examples = [m for m in messages if m.reason == reason][:samples]
        groups.append({"reason": reason, "count": count, "samples": [_sample(m) for m in examples]})
    return {"total": len(messages), "reasons": groups}


def _sample(message: DeadLetterMessage) -> dict[str, Any]:
    sent = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(message.sent_at))
        if message.sent_at
        else None
    )
    return {
        "message_id": message.message_id,
        "dead_lettered_at": sent,
        "source_queue": message.source_queue,
        "body": message.body[:300],
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"{summary['total']} dead-lettered messages"]
    for group in summary["reasons"]:
        lines.append(f"{group['count']:>8}  {group['reason']}")
    for group in summary["reasons"]:
        lines.append("")
        lines.append(f"samples of: {group['reason']}")
        for sample in group["samples"]:
            lines.append(f"  {sample['message_id']}  {sample['dead_lettered_at'] or ''}")
            lines.append(f"    {sample['body'][:200]!r}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- redrive


@dataclass
class RedriveResult:
    method: str  # "move-task" or "receive-send-delete"
    moved: int = 0
    kept: int = 0  # did not match the filter: left in the dead-letter queue
    failed: int = 0  # matched but could not be sent: left in the dead-letter queue
    task_handle: str | None = None
    task_status: str | None = None
    notes: list[str] = field(default_factory=list)


def queue_arn(client: Any, url: str) -> str:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def redrive(
    client: Any,
    dead_letter_url: str,
    source_url: str,
    match: Callable[[str], bool] | None = None,
    *,
    method: str = "auto",
    wait_seconds: float = 60.0,
) -> RedriveResult:
    """method: "auto" (move task when match is None and it works), "move-task", or "manual"."""
    if method not in ("auto", "move-task", "manual"):
        raise ValueError(f"unknown redrive method {method!r}")
    if method == "move-task" and match is not None:
        raise ValueError("SQS's move task moves everything; a reason filter needs --method manual")
    if match is None and method != "manual":
        try:
            return _move_task(client, dead_letter_url, source_url, wait_seconds)
        except (ClientError, BotoCoreError) as exc:
            if method == "move-task":
                raise
            note = f"StartMessageMoveTask not available here ({exc}); moving messages one by one"
            log.info(note)
            result = _move_manually(client, dead_letter_url, source_url, lambda reason: True)
            result.notes.append(note)
            return result
    return _move_manually(client, dead_letter_url, source_url, match or (lambda reason: True))


def _move_task(client: Any, dead_letter_url: str, source_url: str, wait: float) -> RedriveResult:
    source_arn = queue_arn(client, dead_letter_url)
    response = client.start_message_move_task(
        SourceArn=source_arn, DestinationArn=queue_arn(client, source_url)
    )
    result = RedriveResult("move-task", task_handle=response.get("TaskHandle"))
    deadline = time.monotonic() + wait
    while True:
        tasks = client.list_message_move_tasks(SourceArn=source_arn, MaxResults=10)["Results"]
        task = next((t for t in tasks if t.get("TaskHandle") == result.task_handle), None)
        task = task or (tasks[0] if tasks else {})
        result.task_status = task.get("Status")
        result.moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        if result.task_status != "RUNNING" or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _move_manually(
    client: Any, dead_letter_url: str, source_url: str, match: Callable[[str], bool]
) -> RedriveResult:
    result = RedriveResult("receive-send-delete")
    kept: list[DeadLetterMessage] = []
    # Only what is there now: a message the consumer dead-letters again while
    # this runs is a new message, and must not make the loop go round forever.
    limit = depth(client, dead_letter_url)
    try:
        # Non-matching and unsent messages stay invisible until the end, so the scan ends.
        for batch in _batches(_scan(client, dead_letter_url, 300, limit)):
            wanted = [m for m in batch if match(m.reason)]
            kept.extend(m for m in batch if not match(m.reason))
            sent, unsent = _send_back(client, source_url, wanted)
            _delete(client, dead_letter_url, sent)
            result.moved += len(sent)
            result.failed += len(unsent)
            kept.extend(unsent)
    finally:
        release(client, dead_letter_url, kept)
    result.kept = len(kept) - result.failed
    return result


def _batches(messages: Iterator[DeadLetterMessage]) -> Iterator[list[DeadLetterMessage]]:
    # + 1024: the attributes, generously
    return bounded_groups(
        messages, lambda m: len(m.body.encode()) + 1024, _BATCH_BYTES, SQS_BATCH_LIMIT
    )


def source_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """The message's attributes (ingest-format, ingest-encoding, the sender's own)
    without the ones the consumer added when it dead-lettered the message."""
    kept = {}
    for name, value in attributes.items():
        if name in _DEAD_LETTER_ATTRIBUTES:
            continue
        kept[name] = {
            k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")
        }
    return kept


def _send_back(
    client: Any, url: str, messages: Sequence[DeadLetterMessage]
) -> tuple[list[DeadLetterMessage], list[DeadLetterMessage]]:
    if not messages:
        return [], []
    entries = []
    for i, message in enumerate(messages):
        entry: dict[str, Any] = {
            "Id": str(i),
            "MessageBody": message.body,
            "MessageAttributes": source_attributes(message.attributes),
        }
        if url.endswith(".fifo"):
            entry["MessageGroupId"] = message.group_id or "redrive"
            entry["MessageDeduplicationId"] = message.message_id
        entries.append(entry)
    response = client.send_message_batch(QueueUrl=url, Entries=entries)
    failed_ids = {int(f["Id"]) for f in response.get("Failed", [])}
    for entry in response.get("Failed", []):
        log.warning("could not send %s back: %s", messages[int(entry["Id"])].message_id, entry)
    sent = [m for i, m in enumerate(messages) if i not in failed_ids]
    return sent, [m for i, m in enumerate(messages) if i in failed_ids]


def _delete(client: Any, url: str, messages: Sequence[DeadLetterMessage]) -> None:
    for part in chunks(messages):
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(part)]
        for entry in client.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed", []):
            # Sent but not deleted: it will be redriven twice; the _id makes that harmless.
            log.warning(
                "sent back but not deleted: %s (%s)", part[int(entry["Id"])].message_id, entry
            )


# ------------------------------------------------------------------------ purge


def depth(client: Any, url: str) -> int:
    attributes = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)) + int(
        attributes.get("ApproximateNumberOfMessagesNotVisible", 0)
    )


def purge(client: Any, url: str) -> None:
    """Deletes every message in the queue (SQS allows one purge per 60 s per queue)."""
    client.purge_queue(QueueUrl=url)
