"""The `ingest` console script: checks the service's dependencies are installed
before importing the CLI, so a host with only the producer's install gets one line
naming the extra to install, not an ImportError traceback."""

from __future__ import annotations

import importlib.util
import sys

# Import names of the `service` extra in pyproject.toml.
SERVICE_MODULES = ("click", "apscheduler", "prometheus_client", "tqdm")
EXTRA_HINT = 'pip install "sqs-mongo-ingest[service]"'


def missing_modules() -> list[str]:
    return [name for name in SERVICE_MODULES if importlib.util.find_spec(name) is None]


def main() -> None:
    missing = missing_modules()
    if missing:
        print(
            f"ingest: the consumer service needs {', '.join(missing)}, not installed here; "
            f"install the service extra: {EXTRA_HINT}",
            file=sys.stderr,
        )
        sys.exit(2)
    from ingest.cli import main as cli_main

    cli_main()
