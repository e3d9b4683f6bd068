"""The `ingest` command line: parse, build settings, call the service. Nothing else."""

from __future__ import annotations

import json
import logging
import signal
import sys
from typing import Any

import click

from ingest import connect
from ingest.errors import IngestError
from ingest.logs import configure
from ingest.settings import Settings

log = logging.getLogger("ingest")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except IngestError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
@click.version_option(package_name="sqs-mongo-ingest")
def main() -> None:
    """Drain SQS into MongoDB at a rate MongoDB can take."""


@main.command()
@click.option("--queue-url", "queue_urls", help="Queue URL(s), comma-separated [INGEST_QUEUE_URL]")
@click.option("--mongo-uri", help="MongoDB URI [INGEST_MONGO_URI]")
@click.option("--database", help="MongoDB database [INGEST_DATABASE]")
@click.option("--dead-letter-url", help="Dead-letter queue URL (default: from the redrive policy)")
@click.option("--pollers", type=int, help="Pollers per queue [INGEST_POLLERS]")
@click.option("--writers", type=int, help="Writer threads [INGEST_WRITERS]")
@click.option("--visibility-timeout", type=int, help="Seconds [INGEST_VISIBILITY_TIMEOUT]")
@click.option("--wait-seconds", type=int, help="Long-poll seconds, 0-20 [INGEST_WAIT_SECONDS]")
@click.option("--write-mode", type=click.Choice(["insert-once", "replace", "merge"]))
@click.option("--write-concern", help="w: majority, 1, 0 ... [INGEST_WRITE_CONCERN]")
@click.option("--metrics-port", type=int, help="Port for /metrics, /healthz, /readyz; 0 disables")
@click.option("--metrics-host", help="Address to bind the HTTP server [INGEST_METRICS_HOST]")
@click.option("--exit-when-idle", type=float, help="Stop after this many idle seconds")
@click.option("--log-format", type=click.Choice(["text", "json"]))
@click.option("--region", help="AWS region when AWS_DEFAULT_REGION is not set")
@click.option("--max-write-rate", type=float, help="Records/s for all replicas; adaptive: the cap")
@click.option("--write-burst", type=float, help="Records above the ceiling allowed at once")
@click.option("--write-rate", type=click.Choice(["fixed", "adaptive"]), help="[INGEST_WRITE_RATE]")
@click.option("--target-write-latency", help="Adaptive: bulk write latency to hold, e.g. 50ms")
@click.option("--min-write-rate", type=float, help="Adaptive: the floor, records/s")
@click.option("--replica-heartbeat-seconds", type=float, help="How often replicas check in")
@click.option("--allow-collections", help="Comma-separated collections records may go to")
@click.option("--allow-prefixes", help="Comma-separated collection name prefixes allowed")
@click.option("--hooks", help="Per-collection hooks: events=pkg.module:function,...")
@click.option("--partitioned/--no-partitioned", default=None, help="One partition key, one writer")
@click.option("--min-pollers", type=int, help="Scaling by depth: fewest pollers per queue")
@click.option(
    "--max-pollers", type=int, help="Scaling by depth: most pollers per queue; 0 fixes it"
)
def run(**options: Any) -> None:
    """Consume until SIGTERM/SIGINT (or idle, with --exit-when-idle)."""
    from ingest.health import HealthServer
    from ingest.replicas import registry_for
    from ingest.service import Service

    settings = _settings(**options)
    configure(settings.log_format, settings.log_level)
    try:
        mongo = connect.mongo_client(settings)
        service = Service(
            settings, connect.sqs_queues(settings), connect.mongo_sink(settings, mongo),
            replicas=registry_for(settings, mongo),
        )  # fmt: skip
    except IngestError as exc:
        raise click.ClickException(str(exc)) from exc
    server = None
    if settings.metrics_port:
        server = HealthServer(
            settings.metrics_host, settings.metrics_port, service.metrics.registry,
            alive=lambda: not service.stopped.is_set(), ready=lambda: _readiness(service),
        )  # fmt: skip
        server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.request_stop())
    service.start()
    service.wait()
    log.info("stopping: finishing what is in flight")
    service.stop()
    if server:
        server.stop()
    log.info("stopped")


def _readiness(service: Any) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        service.sink.ping()
        checks["mongodb"] = "ok"
    except IngestError as exc:
        checks["mongodb"] = str(exc)
    for url, source in service.queues.items():
        try:
            source.depth()
            checks[f"sqs {url}"] = "ok"
        except IngestError as exc:
            checks[f"sqs {url}"] = str(exc)
    return checks


@main.command()
@click.option("--queue-name", default="ingest-records", show_default=True)
@click.option("--visibility-timeout", default=30, show_default=True)
@click.option("--max-receive-count", default=5, show_default=True, help="Receives before the DLQ")
@click.option("--kms-key-id", help="KMS key for server-side encryption (default: SQS-managed SSE)")
@click.option("--collection", "collections", multiple=True, help="Collections to create")
@click.option("--mongo-uri")
@click.option("--database")
@click.option("--region")
def init(
    queue_name: str, visibility_timeout: int, max_receive_count: int, kms_key_id: str | None,
    collections: tuple[str, ...], mongo_uri: str | None, database: str | None, region: str | None,
) -> None:  # fmt: skip
    """Create the queue, its dead-letter queue and MongoDB's collections. Idempotent."""
    from ingest.provision import create_queues, prepare_database

    settings = _settings(mongo_uri=mongo_uri, database=database, region=region)
    client = connect.sqs_client(settings)
    made = create_queues(
        client, queue_name, visibility_timeout=visibility_timeout,
        max_receive_count=max_receive_count, kms_key_id=kms_key_id,
    )  # fmt: skip
    mongo = connect.mongo_client(settings)
    names = prepare_database(mongo[settings.database], list(collections))
    click.echo(json.dumps({
        "queue_url": made.queue_url, "dead_letter_url": made.dead_letter_url,
        "database": settings.database, "collections": names,
    }))  # fmt: skip


@main.command()
@click.option("--queue-url", "queue_urls")
@click.option("--mongo-uri")
@click.option("--database")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts")
@click.option("--watch", type=click.FloatRange(min=0.5), help="Refresh every N seconds")
@click.option("--consumer", "consumers", multiple=True, help="A consumer's URL: show its /readyz")
def status(
    queue_urls: str | None, mongo_uri: str | None, database: str | None, as_json: bool,
    watch: float | None, consumers: tuple[str, ...],
) -> None:  # fmt: skip
    """Queue depth, dead-letter depth, document counts and consumer readiness."""
    from ingest.status import show

    settings = _settings(queue_urls=queue_urls, mongo_uri=mongo_uri, database=database)
    show(settings, as_json=as_json, watch=watch, consumers=consumers, echo=click.echo)


def _register_operations() -> None:
    from ingest.commands import backfill, dlq

    main.add_command(backfill)
    main.add_command(dlq)


_register_operations()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
