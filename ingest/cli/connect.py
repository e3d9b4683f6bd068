"""The real seams from settings (imported only by commands that use them: boto3 and
pymongo take a while to load)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingest.errors import ConfigError
from ingest.settings import RECEIVE_ATTEMPTS, Settings

CONFLICT_CHECK_SHARE = 0.1

if TYPE_CHECKING:
    from ingest.payloads.s3 import S3Payloads
    from ingest.queues.sqs import SqsQueue, SqsService
    from ingest.sinks.mongo import MongoSink


def queue_service(settings: Settings, *, for_receiving: bool = False) -> SqsService:
    from ingest.queues import sqs

    if not for_receiving:
        return sqs.connect(settings.region)
    return sqs.connect(
        settings.region, read_timeout=settings.receive_timeout, attempts=RECEIVE_ATTEMPTS
    )


def queues(settings: Settings, service: SqsService | None = None) -> dict[str, SqsQueue]:
    if not settings.queue_urls:
        raise ConfigError("no queue: set INGEST_QUEUE_URL or pass --queue-url")
    service = service or queue_service(settings)
    return {url: service.queue(url, settings.dead_letter_url) for url in settings.queue_urls}


def payload_store(settings: Settings) -> S3Payloads:
    """Where the payloads of pointer messages are (S3, from boto3's chain)."""
    from ingest.payloads import s3

    return s3.connect(settings.region, settings.payload_bucket)


def store(settings: Settings, *, quick: bool = False) -> MongoSink:
    """`quick`: short timeouts, for the operator tools and the startup check."""
    from ingest.sinks import mongo
    from ingest.sinks.base import ConflictPolicy

    return mongo.connect(
        settings.mongo_uri, settings.database, settings.write_mode, w=settings.write_concern,
        journal=settings.journal, pool=max(10, settings.writers * 2), quick=quick,
        version_field=settings.version_field, recent_operations=settings.recent_operations,
        check_conflicts=settings.on_conflict is not ConflictPolicy.IGNORE,
        # Counting is a diagnostic: it may cost a tenth of the time at most. Who asked
        # for conflicts in the dead-letter queue gets every bulk checked.
        conflict_check_share=(
            CONFLICT_CHECK_SHARE if settings.on_conflict is ConflictPolicy.COUNT else None
        ),
    )  # fmt: skip
