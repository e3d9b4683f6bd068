"""`ingest backfill PATH`: load history through the producer (see ingest/tools/backfill.py)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from ingest.cli import fail, load_settings
from ingest.cli.connect import queues
from ingest.errors import BackfillError, ConfigError


def _stop_on_sigint() -> threading.Event:
    """First Ctrl-C: finish cleanly (flush a few seconds, checkpoint). Second: stop at once."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        click.echo("interrupted: flushing for a few seconds, then writing the checkpoint "
                   "(Ctrl-C again to abort)", err=True)  # fmt: skip
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
@click.option(
    "--dry-run", is_flag=True, help="Read and check everything; send nothing (no queue needed)"
)
@click.option("--time-field", help="Field whose time becomes a derived ObjectId's timestamp")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Records between checkpoints",
)
@click.option(
    "--compression",
    type=click.Choice(["identity", "gzip", "zstd"]),
    default="identity",
    show_default=True,
)
@click.option(
    "--no-progress",
    is_flag=True,
    help="No progress bar (none either when stderr is not a terminal)",
)
@click.option(
    "--operations",
    is_flag=True,
    help='JSON Lines of operations: {"op": "insert"|"update"|"delete", ...} (docs/operations.md)',
)
@click.option("--region")
def backfill(path: Path, queue_urls: str | None, checkpoint: Path | None, compression: str,
             no_progress: bool, region: str | None, **options: Any) -> None:  # fmt: skip
    """Load history from PATH (a file or a folder of .jsonl/.csv/.bson, maybe .gz) through
    the producer. Resumable, and a re-run creates no duplicate documents (see
    docs/operations.md). Exits 1 when some lines were bad (they are listed)."""
    from ingest.tools import backfill as job
    from ingest.tools.checkpoint import default_path

    settings = load_settings(queue_urls=queue_urls, region=region)
    dry_run = bool(options["dry_run"])
    queue_url = ""
    if not dry_run:
        if len(settings.queue_urls) != 1:
            fail("backfill: name one queue: --queue-url or INGEST_QUEUE_URL", 2)
        (queue_url,) = settings.queue_urls
        queues(settings)  # is it there, and does SQS answer? One line in seconds if not.
    checkpoint = checkpoint or default_path(path, queue_url or "dry-run")
    progress = not no_progress and sys.stderr.isatty()
    plan = job.Options(path=path, checkpoint=checkpoint, queue_url=queue_url, progress=progress,
                       **options)  # fmt: skip
    producer = None
    journal = checkpoint.with_name(checkpoint.stem + ".journal")
    if not dry_run:
        from producer import ConfigError as ProducerConfigError
        from producer import Producer

        try:
            producer = Producer(queue_url, journal_dir=journal, compression=compression,
                                overflow="block", block_timeout=plan.flush_timeout)  # fmt: skip
        except ProducerConfigError as exc:  # the queue URL, or the journal beside the checkpoint
            beside = (
                " (the journal lives beside --checkpoint)" if exc.setting == "journal_dir" else ""
            )
            raise ConfigError(f"backfill: {exc}{beside}") from exc
    stop = _stop_on_sigint()
    runner = job.Backfill(plan, producer, stop)
    error: BackfillError | None = None
    finished = False
    try:
        runner.run()
        finished = True
    except BackfillError as exc:
        error = exc
    finally:
        if producer is not None:
            # Only a run that delivered everything waits long: the others already did.
            producer.close(timeout=plan.flush_timeout if finished and not stop.is_set()
                           else job.STOP_FLUSH_SECONDS)  # fmt: skip
    report = runner.report
    click.echo(job.summary(report))
    waiting = _journaled(producer, journal)
    kept = (
        f"; {waiting} records SQS did not take are journaled in {journal} "
        "(the next run with this checkpoint sends them first)"
        if waiting
        else ""
    )
    if stop.is_set():
        fail(f"stopped early{kept}; run the same command again to resume ({checkpoint})", 130)
    if error is not None:
        fail(f"{error}{kept}", 1)
    if report.bad_lines:
        fail(
            f"{report.bad_lines} bad lines (see above{', and ' + str(plan.bad_lines) if plan.bad_lines else ''})",
            1,
        )


def _journaled(producer: Any, journal: Path) -> int:
    """Records waiting in the producer's journal once it is closed."""
    if producer is None or not journal.is_dir():
        return 0
    return int(producer.journaled())
