"""`ingest check`: before a rollout, does this configuration reach what it needs?
One line per check; any failure makes the command exit non-zero."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ingest.errors import IngestError
from ingest.queues.base import MessageQueue
from ingest.sinks.base import DocumentStore


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def run_checks(
    queues: Callable[[], Mapping[str, MessageQueue]], store: DocumentStore
) -> Iterator[Check]:
    try:
        opened = queues()
    except IngestError as exc:
        yield Check("sqs", False, str(exc))
        opened = {}
    for url, queue in opened.items():
        yield from _queue_checks(url, queue)
    try:
        store.check_write()
        yield Check("mongodb", True, f"can write to database {store.database!r}")
    except IngestError as exc:
        yield Check("mongodb", False, str(exc))


def _queue_checks(url: str, queue: MessageQueue) -> Iterator[Check]:
    try:
        depth = queue.depth()
        yield Check(f"queue {url}", True, f"{depth.visible} visible, {depth.in_flight} in flight")
    except IngestError as exc:
        yield Check(f"queue {url}", False, str(exc))
        return
    if not queue.dead_letter_url:
        yield Check(f"dead-letter queue of {url}", False,
                    "no redrive policy: bad input would be retried until it expires "
                    "(run `ingest init`, or pass --dead-letter-url)")  # fmt: skip
        return
    try:
        queue.dead_letter_depth()
        detail = f"{queue.dead_letter_url}, after {queue.max_receive_count} receives"
        yield Check(f"dead-letter queue of {url}", True, detail)
    except IngestError as exc:
        yield Check(f"dead-letter queue of {url}", False, str(exc))
