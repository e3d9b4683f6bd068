"""Thin click commands for operations: `ingest backfill` and `ingest dlq ...`.

Parsing and printing only; the work is in ingest/backfill.py and ingest/deadletters.py.
ingest/cli.py registers these on the main group."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from ingest import connect
from ingest.errors import IngestError
from ingest.settings import Settings


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except IngestError as exc:
        raise click.UsageError(str(exc)) from exc


def _queue_url(settings: Settings) -> str:
    if len(settings.queue_urls) != 1:
        raise click.UsageError("name one queue: --queue-url or INGEST_QUEUE_URL")
    return settings.queue_urls[0]


def _stop_on_sigint() -> threading.Event:
    """First Ctrl-C: finish cleanly (flush, checkpoint). Second: stop at once."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        click.echo(
            "interrupted: flushing and writing the checkpoint (Ctrl-C again to abort)", err=True
        )
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--queue-url", "queue_urls", help="Queue to send to [INGEST_QUEUE_URL]")
@click.option("--collection", help="Target collection (default for .bson: the file's name)")
@click.option(
    "--source-id",
    help="Stable name of the input for derived _ids (default: names relative to PATH)",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint file (default: ./.ingest-backfill/...)",
)
@click.option(
    "--bad-lines", type=click.Path(path_type=Path), help="Append bad lines here as JSON Lines"
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="At most this many records per second",
)
@click.option("--dry-run", is_flag=True, help="Read and validate everything; send nothing")
@click.option("--time-field", help="Field whose time becomes a derived ObjectId's timestamp")
@click.option(
    "--checkpoint-every", default=5000, show_default=True, help="Records between checkpoints"
)
@click.option(
    "--compression",
    type=click.Choice(["identity", "gzip", "zstd"]),
    default="identity",
    show_default=True,
)
@click.option("--no-progress", is_flag=True, help="No progress bar")
def backfill(path: Path, queue_urls: str | None, checkpoint: Path | None, compression: str,
             no_progress: bool, **options: Any) -> None:  # fmt: skip
    """Load history from PATH (a file or a folder of .jsonl/.csv/.bson, maybe .gz) through
    the producer. Resumable, and a re-run creates no duplicate documents (see docs/operations.md)."""
    from ingest import backfill as job
    from ingest.checkpoint import CheckpointError, default_path
    from ingest.readers import ReaderError

    queue_url = _queue_url(_settings(queue_urls=queue_urls))
    checkpoint = checkpoint or default_path(path, queue_url)
    settings = job.Options(path=path, checkpoint=checkpoint, queue_url=queue_url,
                           progress=not no_progress, **options)  # fmt: skip
    producer = None
    if not settings.dry_run:
        from producer import Producer

        journal = checkpoint.with_name(checkpoint.stem + ".journal")
        producer = Producer(queue_url, journal_dir=journal, compression=compression,
                            overflow="block", block_timeout=settings.flush_timeout)  # fmt: skip
    runner = job.Backfill(settings, producer, _stop_on_sigint())
    try:
        report = runner.run()
    except (job.BackfillError, CheckpointError, ReaderError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if producer is not None:
            producer.close()
    click.echo(job.summary(report))
    if report.interrupted:
        click.echo(f"stopped early; run the same command again to resume ({checkpoint})", err=True)
        sys.exit(130)


# -------------------------------------------------------------------- dlq


@click.group()
def dlq() -> None:
    """Dead-lettered messages: show, redrive, purge."""


def _dead_letter_queue(queue_urls: str | None, dead_letter_url: str | None) -> tuple[Any, str, str]:
    settings = _settings(queue_urls=queue_urls, dead_letter_url=dead_letter_url)
    source = _queue_url(settings)
    client = connect.sqs_client(settings)
    try:
        found = settings.dead_letter_url or connect.dead_letter_url(client, source)
    except IngestError as exc:
        raise click.ClickException(str(exc)) from exc
    if not found:
        raise click.UsageError(f"{source} has no redrive policy: pass --dead-letter-url")
    return client, source, found


_queue_option = click.option("--queue-url", "queue_urls", help="Source queue [INGEST_QUEUE_URL]")
_dlq_option = click.option("--dead-letter-url", help="Default: from the queue's redrive policy")


@dlq.command()
@_queue_option
@_dlq_option
@click.option("--limit", type=int, help="Look at no more than this many messages")
@click.option("--samples", default=3, show_default=True, help="Samples per reason")
@click.option("--json", "as_json", is_flag=True)
def show(queue_urls: str | None, dead_letter_url: str | None, limit: int | None,
         samples: int, as_json: bool) -> None:  # fmt: skip
    """Counts per reason, then samples. Consumes nothing: messages are received
    with a visibility timeout and made visible again at once."""
    from ingest import deadletters

    client, _, url = _dead_letter_queue(queue_urls, dead_letter_url)
    summary = deadletters.summarize(deadletters.peek(client, url, limit), samples)
    summary["dead_letter_url"] = url
    click.echo(json.dumps(summary) if as_json else deadletters.render(summary))


@dlq.command()
@_queue_option
@_dlq_option
@click.option("--reason", help="Only messages whose reason contains this (case-insensitive)")
@click.option("--reason-regex", help="Only messages whose reason matches this regex")
@click.option("--method", type=click.Choice(["auto", "move-task", "manual"]), default="auto",
              show_default=True, help="auto: SQS's move task when moving all, else receive-send-delete")  # fmt: skip
def redrive(queue_urls: str | None, dead_letter_url: str | None, reason: str | None,
            reason_regex: str | None, method: str) -> None:  # fmt: skip
    """Move dead letters back to the source queue, all or filtered by reason."""
    from ingest import deadletters

    client, source, url = _dead_letter_queue(queue_urls, dead_letter_url)
    match = None
    if reason or reason_regex:
        try:
            match = deadletters.reason_matcher(reason, reason_regex)
        except (ValueError, re.error) as exc:
            raise click.UsageError(str(exc)) from exc
    try:
        result = deadletters.redrive(client, url, source, match, method=method)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(json.dumps(vars(result)))


@dlq.command()
@_queue_option
@_dlq_option
@click.option("--yes", is_flag=True, help="Do not ask")
def purge(queue_urls: str | None, dead_letter_url: str | None, yes: bool) -> None:
    """Delete every message in the dead-letter queue."""
    from ingest import deadletters

    client, _, url = _dead_letter_queue(queue_urls, dead_letter_url)
    count = deadletters.depth(client, url)
    if not yes:
        click.confirm(f"Delete all {count} messages in {url}?", abort=True)
    deadletters.purge(client, url)
    click.echo(json.dumps({"purged": count, "dead_letter_url": url}))
