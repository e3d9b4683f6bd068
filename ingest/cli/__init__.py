"""The `ingest` command line: parse, build settings, call the tools and the service.

Every mistake a user can make ends in one line naming what to fix and a non-zero
exit (2 for a usage or configuration mistake, 1 when something did not answer),
never a traceback."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from ingest.errors import ConfigError, IngestError
from ingest.settings import Settings


def load_settings(**flags: Any) -> Settings:
    """Settings from INGEST_* and the flags given; a mistake is a ConfigError."""
    return Settings.from_env(**flags)


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"ingest: {message}", err=True)
    sys.exit(code)


@click.group()
@click.version_option(package_name="sqs-mongo-ingest")
def main_group() -> None:
    """Drain SQS into MongoDB at a rate MongoDB can take."""


def main(argv: list[str] | None = None) -> None:
    """The console script: click's own errors and ours as one line each."""
    from ingest.cli import backfill, consume, dlq, operate

    for command in (
        consume.run,
        operate.init,
        operate.status,
        operate.check,
        backfill.backfill,
        dlq.dlq,
    ):
        main_group.add_command(command)
    try:
        code = main_group.main(args=argv, prog_name="ingest", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "ingest"
        fail(f"{where.removeprefix('ingest ')}: {exc.format_message()} (see --help)", 2)
    except click.Abort:
        fail("aborted", 1)
    except ConfigError as exc:
        fail(str(exc), 2)
    except IngestError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["fail", "load_settings", "main", "main_group"]
