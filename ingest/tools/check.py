"""`ingest check`: before a rollout, does this configuration reach what it needs?
One line per check; any failure makes the command exit non-zero."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from ingest.errors import ConfigError, IngestError
from ingest.queues.base import MessageQueue
from ingest.sinks.base import DocumentStore


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    mistake: bool = False  # failed on the configuration (no region, no queue), not a server

    @classmethod
    def failed(cls, name: str, exc: IngestError) -> Check:
        return cls(name, False, str(exc), mistake=isinstance(exc, ConfigError))

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def run_checks(
    queues: Callable[[], Mapping[str, MessageQueue]], store: DocumentStore
) -> Iterator[Check]:
    try:
        opened = queues()
    except IngestError as exc:
        yield Check.failed("sqs", exc)
        opened = {}
    for url, queue in opened.items():
        yield from _queue_checks(url, queue)
    yield from _store_checks(store)


def _store_checks(store: DocumentStore) -> Iterator[Check]:
    where = getattr(store, "where", "MongoDB")
    try:
        store.ping()
        yield Check("mongodb", True, f"{where} answers")
    except IngestError as exc:
        yield Check.failed("mongodb", exc)
        return
    try:
        store.check_write()
        yield Check("mongodb write", True, f"can write to database {store.database!r}")
    except IngestError as exc:
        yield Check.failed("mongodb write", exc)


def _queue_checks(url: str, queue: MessageQueue) -> Iterator[Check]:
    try:
        depth = queue.depth()
        yield Check(f"queue {url}", True, f"{depth.visible} visible, {depth.in_flight} in flight")
    except IngestError as exc:
        yield Check.failed(f"queue {url}", exc)
        return
    if not queue.dead_letter_url:
        yield Check(f"dead-letter queue of {url}", False,
                    "no redrive policy: bad input would be retried until it expires "
                    "(run `ingest init`, or pass --dead-letter-url)")  # fmt: skip
        return
    try:
        queue.dead_letter_depth()
        detail = f"{queue.dead_letter_url}, after {queue.max_receive_count} receives"
        if not queue.max_receive_count:  # --dead-letter-url on a queue without a policy
            detail = (
                f"{queue.dead_letter_url} (no redrive policy: only the consumer moves messages)"
            )
        yield Check(f"dead-letter queue of {url}", True, detail)
    except IngestError as exc:
        yield Check.failed(f"dead-letter queue of {url}", exc)
