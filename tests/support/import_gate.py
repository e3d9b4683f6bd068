"""A module import that waits to be let through: what a sender thread inside a slow
import (boto3, botocore) looks like to a fork (tests/unit/test_producer_fork.py)."""

from __future__ import annotations

import threading


class ImportGate:
    """The module `slow_module` blocks its own import, on whichever thread imports it,
    until `release` is set; `entered` tells that the import has begun."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


GATE = ImportGate()
