"""Dead-letter tools: look at dead letters without consuming them, move them back, purge.
They speak only the queue seam, so they run (and are tested) on the in-memory queue too.

Looking (`show`) receives with a visibility timeout long enough for one scan (so each
message is seen once), then makes every received message visible again at once.
Nothing is deleted; the only trace is a higher receive count on the dead-letter queue,
which has no redrive policy of its own.

Moving back (`redrive`) uses SQS's own move task when every message goes and the
endpoint supports it (it moves messages as they are, attributes included). With a
reason filter, or where the task is refused, it moves them itself: receive, send to
the source queue with the message's attributes minus the dead-letter ones, delete
only what was sent, release what did not match."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import QueueRefused
from ingest.queues.base import (
    DEAD_LETTER_ATTRIBUTES,
    SOURCE_QUEUE_ATTRIBUTE,
    Message,
    MessageQueue,
    Outgoing,
    QueueService,
    sendable_attributes,
)
from producer import wire

log = logging.getLogger(__name__)

Matcher = Callable[[str], bool]


def reason_matcher(substring: str | None = None, regex: str | None = None) -> Matcher:
    """A filter on the reason: substring (case-insensitive) or regular expression.
    Raises ValueError (re.error is one) for both, or for a bad expression."""
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


def _scan(queue: MessageQueue, visibility: int, limit: int | None) -> Iterator[Message]:
    """Each visible message once; an empty long poll ends it (a long poll asks every
    SQS server, so unlike a short poll, empty means empty)."""
    seen: set[str] = set()
    while limit is None or len(seen) < limit:
        got = queue.receive(10, 1, visibility)
        if not got:
            return
        for message in got:
            seen.add(message.message_id)
            yield message


def release(queue: MessageQueue, messages: Sequence[Message]) -> None:
    # A message that cannot be released turns visible when the scan's timeout runs out.
    for message in queue.change_visibility([(m, 0) for m in messages]):
        log.warning("could not release %s", message.message_id)


def peek(queue: MessageQueue, limit: int | None = None, hold_seconds: int = 60) -> list[Message]:
    """Every message (up to limit), left in the queue and visible again on return."""
    held: list[Message] = []
    unique: dict[str, Message] = {}
    try:
        for message in _scan(queue, hold_seconds, limit):
            held.append(message)
            unique.setdefault(message.message_id, message)
    finally:
        release(queue, held)
    return list(unique.values())[:limit]


def summarize(messages: Sequence[Message], samples: int = 3) -> dict[str, Any]:
    counts = Counter(m.reason for m in messages)
    groups = []
    for reason, count in counts.most_common():
        examples = [m for m in messages if m.reason == reason][:samples]
        groups.append({"reason": reason, "count": count, "samples": [_sample(m) for m in examples]})
    return {"total": len(messages), "reasons": groups}


def _sample(message: Message) -> dict[str, Any]:
    sent = message.sent_at
    return {
        "message_id": message.message_id,
        "dead_lettered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sent))
        if sent
        else None,
        "source_queue": message.attribute(SOURCE_QUEUE_ATTRIBUTE),
        # Format 2 is BSON: shown as the Extended JSON a person can read.
        "body": wire.readable(message.body, message.attributes)[:300],
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


def redrive(
    service: QueueService,
    dead_letters: MessageQueue,
    source: MessageQueue,
    match: Matcher | None = None,
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
            return _move_task(service, dead_letters.url, source.url, wait_seconds)
        except QueueRefused as exc:
            if method == "move-task":
                raise
            note = f"the move task is not available here ({exc}); moving messages one by one"
            log.info(note)
            result = _move_manually(dead_letters, source, lambda reason: True)
            result.notes.append(note)
            return result
    return _move_manually(dead_letters, source, match or (lambda reason: True))


def _move_task(service: QueueService, dead_url: str, source_url: str, wait: float) -> RedriveResult:
    handle = service.start_move(dead_url, source_url)
    result = RedriveResult("move-task", task_handle=handle)
    deadline = time.monotonic() + wait
    while True:
        task = service.move_status(dead_url, handle)
        result.task_status, result.moved = task.status, task.moved
        if task.status != "RUNNING" or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def _move_manually(
    dead_letters: MessageQueue, source: MessageQueue, match: Matcher
) -> RedriveResult:
    result = RedriveResult("receive-send-delete")
    kept: list[Message] = []
    # Only what is there now: a message the consumer dead-letters again while this
    # runs is a new message, and must not make the loop go round forever.
    limit = dead_letters.depth().total
    try:
        # Non-matching and unsent messages stay invisible until the end, so the scan ends.
        for batch in _batches(_scan(dead_letters, 300, limit)):
            wanted = [m for m in batch if match(m.reason)]
            kept.extend(m for m in batch if not match(m.reason))
            sent, unsent = _send_back(source, wanted)
            for message in dead_letters.delete(sent):
                # Sent but not deleted: it will be redriven twice; the _id makes that harmless.
                log.warning("sent back but not deleted: %s", message.message_id)
            result.moved += len(sent)
            result.failed += len(unsent)
            kept.extend(unsent)
    finally:
        release(dead_letters, kept)
    result.kept = len(kept) - result.failed
    return result


def _batches(messages: Iterator[Message]) -> Iterator[list[Message]]:
    batch: list[Message] = []
    for message in messages:
        batch.append(message)
        if len(batch) == 10:
            yield batch
            batch = []
    if batch:
        yield batch


def _send_back(
    source: MessageQueue, messages: Sequence[Message]
) -> tuple[list[Message], list[Message]]:
    fifo = source.url.endswith(".fifo")
    outgoing = [
        Outgoing(
            m.body,
            sendable_attributes(m.attributes, drop=DEAD_LETTER_ATTRIBUTES),
            (m.group_id or "redrive") if fifo else None,
            m.message_id if fifo else None,
        )
        for m in messages
    ]
    failed = {id(m) for m in source.send_batch(outgoing)} if outgoing else set()
    sent = [m for m, o in zip(messages, outgoing, strict=True) if id(o) not in failed]
    return sent, [m for m, o in zip(messages, outgoing, strict=True) if id(o) in failed]
