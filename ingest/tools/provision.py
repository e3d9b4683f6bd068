"""`ingest init`: the queue, its dead-letter queue with a redrive policy, and the
database's collections. Idempotent; speaks only the two seams."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.queues.base import QueueService
from ingest.sinks.base import DocumentStore


@dataclass(frozen=True)
class Provisioned:
    queue_url: str
    dead_letter_url: str
    database: str
    collections: list[str]

    def as_dict(self) -> dict[str, object]:
        return {
            "queue_url": self.queue_url, "dead_letter_url": self.dead_letter_url,
            "database": self.database, "collections": self.collections,
        }  # fmt: skip


def provision(
    queues: QueueService,
    store: DocumentStore,
    name: str,
    collections: Sequence[str] = (),
    *,
    visibility_timeout: int = 30,
    max_receive_count: int = 5,
    kms_key_id: str | None = None,
) -> Provisioned:
    queue = queues.create(
        name, visibility_timeout=visibility_timeout, max_receive_count=max_receive_count,
        kms_key_id=kms_key_id,
    )  # fmt: skip
    names = store.prepare(list(collections))
    return Provisioned(queue.url, queue.dead_letter_url or "", store.database, names)
