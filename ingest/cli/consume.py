"""`ingest run`: consume until SIGTERM/SIGINT (or idle, with --exit-when-idle)."""

from __future__ import annotations

import logging
import signal
from typing import Any

import click

from ingest.cli import load_settings
from ingest.cli.connect import payload_store, queue_service, queues, store
from ingest.errors import SinkUnavailable
from ingest.logs import configure

log = logging.getLogger("ingest")


@click.command()
@click.option("--queue-url", "queue_urls", help="Queue URL(s), comma-separated [INGEST_QUEUE_URL]")
@click.option("--mongo-uri", help="MongoDB URI [INGEST_MONGO_URI]")
@click.option("--database", help="MongoDB database [INGEST_DATABASE]")
@click.option("--dead-letter-url", help="Dead-letter queue URL (default: from the redrive policy)")
@click.option("--pollers", type=int, help="Pollers per queue [INGEST_POLLERS]")
@click.option("--writers", type=int, help="Writer threads [INGEST_WRITERS]")
@click.option("--visibility-timeout", type=int, help="Seconds [INGEST_VISIBILITY_TIMEOUT]")
@click.option("--wait-seconds", type=int, help="Long-poll seconds, 0-20 [INGEST_WAIT_SECONDS]")
@click.option("--write-mode", help="insert-once, replace or merge [INGEST_WRITE_MODE]")
@click.option("--version-field", help="Replace/merge: write only over a lower version in FIELD")
@click.option(
    "--on-conflict",
    help="Insert-once, a duplicate with other content: ignore, count or dead-letter",
)
@click.option(
    "--max-attempts",
    type=int,
    help="Failed attempts before a record is dead-lettered; 0: the queue's maxReceiveCount",
)
@click.option(
    "--recent-operations",
    type=int,
    help="Operation ids each document keeps, to apply an update once [INGEST_RECENT_OPERATIONS]",
)
@click.option(
    "--tombstone-seconds",
    type=float,
    help="How long a delete's tombstone lives [INGEST_TOMBSTONE_SECONDS]",
)
@click.option("--write-concern", help="w: majority, 1, 0 ... [INGEST_WRITE_CONCERN]")
@click.option("--metrics-port", type=int, help="Port for /metrics, /healthz, /readyz; 0 disables")
@click.option("--metrics-host", help="Address to bind the HTTP server [INGEST_METRICS_HOST]")
@click.option("--exit-when-idle", type=float, help="Stop after this many idle seconds")
@click.option("--log-format", help="text or json [INGEST_LOG_FORMAT]")
@click.option("--log-level", help="DEBUG, INFO, WARNING or ERROR [INGEST_LOG_LEVEL]")
@click.option("--region", help="AWS region when AWS_DEFAULT_REGION is not set")
@click.option("--max-write-rate", type=float, help="Records/s for all replicas; adaptive: the cap")
@click.option("--write-burst", type=float, help="Records above the ceiling allowed at once")
@click.option("--write-rate", help="fixed or adaptive [INGEST_WRITE_RATE]")
@click.option("--target-write-latency", help="Adaptive: bulk write latency to hold, e.g. 50ms")
@click.option("--min-write-rate", type=float, help="Adaptive: the floor, records/s")
@click.option("--replica-heartbeat-seconds", type=float, help="How often replicas check in")
@click.option("--allow-collections", help="Comma-separated collections records may go to")
@click.option("--allow-prefixes", help="Comma-separated collection name prefixes allowed")
@click.option("--hooks", help="Per-collection hooks: events=pkg.module:function,...")
@click.option(
    "--payload-bucket", help="S3 bucket of large records' payloads [INGEST_PAYLOAD_BUCKET]"
)
@click.option(
    "--keep-payloads/--delete-payloads",
    default=None,
    help="Leave payloads in S3 after their message (the bucket's lifecycle deletes them)",
)
@click.option("--partitioned/--no-partitioned", default=None, help="One partition key, one writer")
@click.option("--min-pollers", type=int, help="Scaling by depth: fewest pollers per queue")
@click.option(
    "--max-pollers", type=int, help="Scaling by depth: most pollers per queue; 0 fixes it"
)
def run(**flags: Any) -> None:
    """Consume until SIGTERM/SIGINT (or idle, with --exit-when-idle)."""
    from ingest.cli.options import service_options
    from ingest.flow.replicas import ReplicaRegistry
    from ingest.health import Health, HealthServer
    from ingest.metrics import Metrics
    from ingest.pipeline.service import Service

    settings = load_settings(**flags)
    configure(settings.log_format, settings.log_level)
    metrics = Metrics()
    built: list[Service] = []

    def health() -> Health:
        if built:
            return built[0].health()
        return Health(alive=True, ready=False, checks={"service": "starting"})

    server = None
    if settings.metrics_port:
        # First: a port in use is a mistake to report before anything is contacted.
        server = HealthServer(
            settings.metrics_host, settings.metrics_port, metrics.registry, health
        )
        server.start()  # answers "starting" (not ready) until the service is built
    sink = store(settings)
    # Checked before anything runs, with short timeouts: one line in seconds.
    sources = queues(settings, queue_service(settings, for_receiving=True))
    # Every replica checks in (for `ingest status`); under a ceiling, to share it too.
    registry = ReplicaRegistry(sink.replica_board(), settings.replica_heartbeat_seconds)
    service = Service(
        service_options(settings),
        sources,
        sink,
        metrics=metrics,
        replicas=registry,
        payloads=payload_store(settings),
    )
    try:
        store(settings, quick=True).ping()
    except SinkUnavailable as exc:  # not fatal: wait for it, receiving nothing meanwhile
        service.breaker.record_failure(str(exc))
    built.append(service)  # probes answer from its state now that MongoDB was asked
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: service.request_stop())
    service.start()
    service.wait()
    log.info("stopping: finishing what is in flight")
    service.stop()
    if server:
        server.stop()
    log.info("stopped")
