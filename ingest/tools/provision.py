"""`ingest init`: the queue, its dead-letter queue with a redrive policy, the
database's collections, optionally their expiry (--expire-after DAYS
--expire-field FIELD: a TTL index) and the S3 bucket for large records' payloads
(--payload-bucket). Idempotent; speaks only the seams."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingest.errors import ConfigError
from ingest.payloads.base import PayloadStore
from ingest.queues.base import QueueService
from ingest.settings import Settings
from ingest.sinks.base import DocumentStore, Retention

DAY_SECONDS = 86400


@dataclass(frozen=True)
class Provisioned:
    queue_url: str
    dead_letter_url: str
    database: str
    collections: list[str]
    retention: Retention | None = None
    expiring: tuple[str, ...] = ()
    payload_bucket: str | None = None
    bucket_created: bool = False

    def as_dict(self) -> dict[str, object]:
        made: dict[str, object] = {
            "queue_url": self.queue_url, "dead_letter_url": self.dead_letter_url,
            "database": self.database, "collections": self.collections,
        }  # fmt: skip
        if self.payload_bucket is not None:
            made["payload_bucket"] = {"name": self.payload_bucket, "created": self.bucket_created}
        if self.retention is not None:
            made["expire"] = {
                "collections": list(self.expiring), "field": self.retention.field,
                "after_seconds": self.retention.seconds,
            }  # fmt: skip
        return made


def retention_of(settings: Settings, collections: Sequence[str]) -> Retention | None:
    """--expire-after DAYS --expire-field FIELD (Settings checks they come together),
    for the collections named."""
    if settings.expire_after_days is None or settings.expire_field is None:
        return None
    _require_collections(collections)
    return Retention(settings.expire_field, settings.expire_after_days * DAY_SECONDS)


def _require_collections(collections: Sequence[str]) -> None:
    if not collections:
        raise ConfigError(
            "--expire-after needs the collections to expire: name each with --collection"
        )


def provision(
    queues: QueueService,
    store: DocumentStore,
    name: str,
    collections: Sequence[str] = (),
    *,
    visibility_timeout: int = 30,
    max_receive_count: int = 5,
    kms_key_id: str | None = None,
    retention: Retention | None = None,
    payloads: PayloadStore | None = None,
    payload_bucket: str | None = None,
) -> Provisioned:
    if retention is not None:
        _require_collections(collections)
    created = False
    if payload_bucket is not None and payloads is not None:
        created = payloads.create_bucket(payload_bucket)
    queue = queues.create(
        name, visibility_timeout=visibility_timeout, max_receive_count=max_receive_count,
        kms_key_id=kms_key_id,
    )  # fmt: skip
    names = store.prepare(list(collections))
    if retention is not None:
        store.expire(list(collections), retention)
    return Provisioned(
        queue.url, queue.dead_letter_url or "", store.database, names, retention,
        tuple(collections), payload_bucket, created,
    )  # fmt: skip
