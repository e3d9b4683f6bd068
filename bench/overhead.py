"""Pipeline overhead: ingest's own stages (receive, decode, write, ack) over the in-memory
queue into the in-memory sink, in CPU microseconds per record (time.process_time, all
threads of this process), with messages packed as our Producer packs them.

The in-memory sink's own work (a dict insert keyed on the _id) is measured apart and
reported both ways, since a real sink's cost is in the ceilings. So is the garbage
collector's time (gc.callbacks): the in-memory sink keeps every document alive, and
each full collection walks them all, which a real sink (documents freed once
written) does not cause. The baseline, measured in the same run because this
machine's speed varies by 2x from minute to minute, is json.loads of the same lines
on one thread: the floor any JSON wire format pays."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from bench import infra
from bench.records import record_lines
from ingest.cli.options import service_options
from ingest.pipeline.service import Service
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.memory import MemorySink
from producer import wire

TIMEOUT = 300.0


def _stored(sink: MemorySink) -> int:
    return sum(len(documents) for documents in sink.collections.values())


@contextmanager
def _collector_off() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def sink_cpu(lines: Sequence[str]) -> float:
    """CPU seconds MemorySink.write alone spends on these records, GC off (the run
    already counted the collector's time)."""
    records = [wire.decode_line(line) for line in lines]
    sink = MemorySink()
    with _collector_off():
        start = time.process_time()
        for i in range(0, len(records), 640):
            sink.write(records[i : i + 640])
        return time.process_time() - start


class GcTimer:
    """CPU seconds spent in the garbage collector while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self)


def json_baseline(lines: Sequence[str]) -> float:
    """CPU seconds json.loads takes over these lines, one thread, GC off."""
    with _collector_off():
        start = time.process_time()
        for line in lines:
            json.loads(line)
        return time.process_time() - start


def run(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Format 1 without compression (against json.loads of the same lines) twice: as is,
    and with what the in-memory sink keeps frozen out of the collector (gc.freeze every
    50 ms), as if the documents had left the process as a real sink's do. The second is
    the headline; both are reported. Then the producer's defaults (format 2, zstd)."""
    lines = record_lines(list(documents))
    format1 = infra.producer_bodies(documents, wire_format=1, compression="identity")
    kept_frozen = _run(format1, lines, freeze_kept=True)
    as_is = _run(format1, lines, freeze_kept=False)
    format2 = _run(infra.producer_bodies(documents), lines, freeze_kept=True)
    return kept_frozen | {
        "us_per_record_sink_kept_in_gc": as_is["us_per_record"],
        "gc_us_per_record_sink_kept_in_gc": as_is["gc_us_per_record"],
        "format2_us_per_record": format2["us_per_record"],
        "format2_us_per_record_without_sink_and_gc": format2["us_per_record_without_sink_and_gc"],
    }


def _run(bodies: Sequence[infra.Body], lines: list[str], *, freeze_kept: bool) -> dict[str, Any]:
    gc.collect()
    queue = MemoryQueue()
    for body in bodies:
        queue.send(body.text, body.attributes)
    sink = MemorySink()
    settings = Settings(queue_urls=(queue.url,), metrics_port=0, wait_seconds=1)
    service = Service(service_options(settings), {queue.url: queue}, sink)
    wall, cpu = time.monotonic(), time.process_time()
    with GcTimer() as gc_time:
        service.start()
        deadline = wall + TIMEOUT
        frozen_at = wall
        while _stored(sink) < len(lines):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{_stored(sink)} of {len(lines)} records after {TIMEOUT:.0f}s")
            time.sleep(0.005)
            if freeze_kept and time.monotonic() - frozen_at >= 0.05:
                gc.freeze()
                frozen_at = time.monotonic()
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    service.stop(deadline_seconds=10)
    gc.unfreeze()
    sink_seconds = sink_cpu(lines)
    baseline = json_baseline(lines)
    per_record = 1e6 / len(lines)
    own = cpu - sink_seconds - gc_time.seconds
    return {
        "records": len(lines),
        "messages": len(bodies),
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "us_per_record": round(cpu * per_record, 2),
        "memory_sink_us_per_record": round(sink_seconds * per_record, 2),
        "gc_us_per_record": round(gc_time.seconds * per_record, 2),
        "us_per_record_without_sink_and_gc": round(own * per_record, 2),
        "json_loads_us_per_record": round(baseline * per_record, 2),
        "without_sink_and_gc_vs_json_loads": round(own / baseline, 2),
    }
