"""Pipeline overhead: ingest's own stages (receive, decode, write, ack) over the in-memory
queue into the in-memory sink, in CPU microseconds per record (time.process_time, all
threads of this process), with messages packed as our Producer packs them.

The in-memory sink's own work (a dict insert keyed on the _id's Extended JSON) is
measured apart and reported both ways, since a real sink's cost is in the ceilings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bench.ceilings import packed_bodies
from bench.records import record_lines
from ingest.queue import MemoryQueue
from ingest.service import Service
from ingest.settings import Settings
from ingest.sink import MemorySink
from producer import wire

TIMEOUT = 300.0


def _stored(sink: MemorySink) -> int:
    return sum(len(documents) for documents in sink.collections.values())


def sink_cpu(lines: Sequence[str]) -> float:
    """CPU seconds MemorySink.write alone spends on these records."""
    records = [wire.decode_line(line) for line in lines]
    sink = MemorySink()
    start = time.process_time()
    for i in range(0, len(records), 640):
        sink.write(records[i : i + 640])
    return time.process_time() - start


def run(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    lines = record_lines(list(documents))
    queue = MemoryQueue()
    bodies = packed_bodies(lines)
    for body in bodies:
        queue.send(body.text, body.attributes)
    sink = MemorySink()
    settings = Settings(queue_urls=(queue.url,), metrics_port=0, wait_seconds=1)
    service = Service(settings, {queue.url: queue}, sink)
    wall, cpu = time.monotonic(), time.process_time()
    service.start()
    deadline = wall + TIMEOUT
    while _stored(sink) < len(lines):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{_stored(sink)} of {len(lines)} records after {TIMEOUT:.0f}s")
        time.sleep(0.005)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    service.stop(deadline_seconds=10)
    sink_seconds = sink_cpu(lines)
    per_record = 1e6 / len(lines)
    return {
        "records": len(lines),
        "messages": len(bodies),
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "us_per_record": round(cpu * per_record, 2),
        "memory_sink_us_per_record": round(sink_seconds * per_record, 2),
        "us_per_record_without_sink": round((cpu - sink_seconds) * per_record, 2),
    }
