"""Scaling: our consumer's throughput with 1, 2 and 4 `ingest run` processes on one queue
(packed messages, as our Producer sends them). On a 2-core machine that also runs both
servers, more processes mostly show where the servers' own limits are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench import ours

PROCESSES = (1, 2, 4)


def run(
    documents: Sequence[dict[str, Any]], processes: Sequence[int] = PROCESSES
) -> dict[str, Any]:
    return {str(n): ours.run(documents, packed=True, processes=n) for n in processes}
