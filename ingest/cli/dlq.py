"""`ingest dlq show | redrive | purge`: the dead-letter queue, by reason."""

from __future__ import annotations

import json
import re

import click

from ingest.cli import fail, load_settings
from ingest.cli.connect import queue_service
from ingest.queues.base import MessageQueue, QueueService


def _open(
    queue_urls: str | None, dead_letter_url: str | None, region: str | None
) -> tuple[QueueService, MessageQueue, MessageQueue]:
    """The service, the source queue and its dead-letter queue."""
    settings = load_settings(queue_urls=queue_urls, dead_letter_url=dead_letter_url, region=region)
    if len(settings.queue_urls) != 1:
        fail("dlq: name one queue: --queue-url or INGEST_QUEUE_URL", 2)
    service = queue_service(settings)
    source = service.queue(settings.queue_urls[0], settings.dead_letter_url)
    if not source.dead_letter_url:
        fail(f"dlq: {source.url} has no redrive policy: pass --dead-letter-url", 2)
    return service, source, service.queue(source.dead_letter_url)


_queue_option = click.option("--queue-url", "queue_urls", help="Source queue [INGEST_QUEUE_URL]")
_dlq_option = click.option("--dead-letter-url", help="Default: from the queue's redrive policy")
_region_option = click.option("--region")


@click.group()
def dlq() -> None:
    """Dead-lettered messages: show, redrive, purge."""


@dlq.command()
@_queue_option
@_dlq_option
@_region_option
@click.option("--limit", type=click.IntRange(min=1), help="Look at no more than this many messages")
@click.option(
    "--samples", type=click.IntRange(min=0), default=3, show_default=True, help="Samples per reason"
)
@click.option("--json", "as_json", is_flag=True)
def show(queue_urls: str | None, dead_letter_url: str | None, region: str | None,
         limit: int | None, samples: int, as_json: bool) -> None:  # fmt: skip
    """Counts per reason, then samples. Consumes nothing: messages are received
    with a visibility timeout and made visible again at once."""
    from ingest.tools import deadletters

    _, _, dead = _open(queue_urls, dead_letter_url, region)
    summary = deadletters.summarize(deadletters.peek(dead, limit), samples)
    summary["dead_letter_url"] = dead.url
    click.echo(json.dumps(summary) if as_json else deadletters.render(summary))


@dlq.command()
@_queue_option
@_dlq_option
@_region_option
@click.option("--reason", help="Only messages whose reason contains this (case-insensitive)")
@click.option("--reason-regex", help="Only messages whose reason matches this regex")
@click.option("--method", type=click.Choice(["auto", "move-task", "manual"]), default="auto",
              show_default=True, help="auto: SQS's move task when moving all, else receive-send-delete")  # fmt: skip
def redrive(queue_urls: str | None, dead_letter_url: str | None, region: str | None,
            reason: str | None, reason_regex: str | None, method: str) -> None:  # fmt: skip
    """Move dead letters back to the source queue, all or filtered by reason."""
    from ingest.tools import deadletters

    match = None
    if reason or reason_regex:
        try:
            match = deadletters.reason_matcher(reason, reason_regex)
        except (ValueError, re.error) as exc:
            raise click.UsageError(str(exc)) from exc
    if method == "move-task" and match is not None:
        raise click.UsageError(
            "SQS's move task moves everything; a reason filter needs --method manual"
        )
    service, source, dead = _open(queue_urls, dead_letter_url, region)
    result = deadletters.redrive(service, dead, source, match, method=method)
    click.echo(json.dumps(vars(result)))


@dlq.command()
@_queue_option
@_dlq_option
@_region_option
@click.option("--yes", is_flag=True, help="Do not ask")
def purge(
    queue_urls: str | None, dead_letter_url: str | None, region: str | None, yes: bool
) -> None:
    """Delete every dead letter (SQS allows one purge per 60 s per queue)."""
    _, _, dead = _open(queue_urls, dead_letter_url, region)
    count = dead.depth().total
    if not yes:
        click.confirm(f"Delete all {count} messages in {dead.url}?", abort=True)
    dead.purge()
    click.echo(json.dumps({"purged": count, "dead_letter_url": dead.url}))
