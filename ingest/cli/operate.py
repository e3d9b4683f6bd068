"""`ingest init`, `ingest status` and `ingest check`."""

from __future__ import annotations

import json
from typing import Any

import click

from ingest.cli import fail, load_settings
from ingest.cli.connect import payload_store, queue_service, queues, store
from ingest.flow.replicas import MISSED_HEARTBEATS


def _queue_name(_ctx: click.Context, _param: click.Parameter, name: str) -> str:
    from ingest.queues.base import queue_name_problem

    problem = queue_name_problem(name)
    if problem:
        raise click.BadParameter(problem)
    return name


@click.command()
@click.option("--queue-name", default="ingest-records", show_default=True, callback=_queue_name)
@click.option("--visibility-timeout", type=click.IntRange(0, 43200), default=30, show_default=True)
@click.option("--max-receive-count", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Receives before SQS moves a message to the dead-letter queue")  # fmt: skip
@click.option("--kms-key-id", help="KMS key for server-side encryption (default: SQS-managed SSE)")
@click.option("--collection", "collections", multiple=True, help="Collections to create")
@click.option("--expire-after", "expire_after_days", type=int,
              help="Delete the collections' documents DAYS after --expire-field (TTL index)")  # fmt: skip
@click.option("--expire-field", help="The date field documents expire by")
@click.option("--payload-bucket", help="Create this S3 bucket for large records' payloads "
              "[INGEST_PAYLOAD_BUCKET]")  # fmt: skip
@click.option("--mongo-uri")
@click.option("--database")
@click.option("--region")
def init(queue_name: str, visibility_timeout: int, max_receive_count: int, kms_key_id: str | None,
         collections: tuple[str, ...], **flags: Any) -> None:  # fmt: skip
    """Create the queue, its dead-letter queue and MongoDB's collections (with
    --expire-after, a TTL index on each; with --payload-bucket, the S3 bucket for
    records too large for SQS). Idempotent."""
    from ingest.tools.provision import provision, retention_of

    settings = load_settings(**flags)
    retention = retention_of(settings, collections)  # a mistake: one line before connecting
    bucket = settings.payload_bucket
    made = provision(
        queue_service(settings), store(settings, quick=True), queue_name, collections,
        visibility_timeout=visibility_timeout, max_receive_count=max_receive_count,
        kms_key_id=kms_key_id, retention=retention,
        payloads=payload_store(settings) if bucket else None, payload_bucket=bucket,
    )  # fmt: skip
    click.echo(json.dumps(made.as_dict()))


@click.command()
@click.option("--queue-url", "queue_urls")
@click.option("--mongo-uri")
@click.option("--database")
@click.option("--region")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts")
@click.option("--watch", type=click.FloatRange(min=0.5), help="Refresh every N seconds")
@click.option("--consumer", "consumers", multiple=True, help="A consumer's URL: show its /readyz")
def status(as_json: bool, watch: float | None, consumers: tuple[str, ...], **flags: Any) -> None:
    """Queue depth, dead-letter depth, document counts and consumer readiness.
    Exits 1 when SQS or MongoDB does not answer, or a consumer is not ready."""
    from ingest.tools.status import collect, show

    settings = load_settings(**flags)
    service, sink = queue_service(settings), store(settings, quick=True)
    board = sink.replica_board()
    window = settings.replica_heartbeat_seconds * MISSED_HEARTBEATS

    def report() -> dict[str, Any]:
        return collect(lambda: queues(settings, service), sink, board, window, consumers)

    if not show(report, as_json=as_json, watch=watch, echo=click.echo):
        raise SystemExit(1)


@click.command()
@click.option("--queue-url", "queue_urls")
@click.option("--dead-letter-url")
@click.option("--mongo-uri")
@click.option("--database")
@click.option("--region")
def check(**flags: Any) -> None:
    """Check the configuration before a rollout: the settings, the queue, its dead-letter
    queue and redrive policy, and write access to the database, with short timeouts.
    One line per check; exits 2 on a configuration mistake, 1 on any other failure."""
    from ingest.tools.check import run_checks

    settings = load_settings(**flags)
    click.echo("ok    settings: valid")
    results = []
    for result in run_checks(lambda: queues(settings), store(settings, quick=True)):
        click.echo(result.line())  # as each comes: a server that times out shows where
        results.append(result)
    failed = [r for r in results if not r.ok]
    if failed:
        mistake = any(r.mistake for r in failed)
        fail(f"{len(failed)} of {len(results) + 1} checks failed", 2 if mistake else 1)
