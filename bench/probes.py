"""How fast the answers that must not wait come: /readyz while MongoDB hangs, and
Producer.close() against an SQS endpoint that never answers. The tests prove the
behaviour (tests/unit/test_first_hour_health.py: /readyz never asks the store;
tests/unit/test_first_hour_producer.py: close() gives up at its timeout and journals);
here the time is measured, each against a baseline taken in the same run:

- readyz: /readyz's median and worst latency while the store's ping hangs, and the
  same with a store that answers; `ratio` is hanging over answering (about 1).
- close: seconds close(timeout) took against a silent endpoint; `ratio` is that over
  its timeout (about 1, never far above).

    python -m bench.probes [--probes 50] [--close-timeout 1.0]

No server needed: in-process, on the in-memory queue and sink and a loopback listener
that never answers. Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ingest.cli.options import service_options
from ingest.errors import SinkUnavailable
from ingest.health import HealthServer
from ingest.metrics import Metrics
from ingest.pipeline.service import Service
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.memory import MemorySink
from producer import Producer


class _HangingSink(MemorySink):
    """A store whose ping never answers (until released)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.pinging = threading.Event()

    def ping(self) -> None:
        self.pinging.set()
        self.release.wait(120)
        raise SinkUnavailable("MongoDB does not answer: timed out")


@contextmanager
def _serving(sink: MemorySink) -> Iterator[int]:
    queue = MemoryQueue(url="memory://q")
    settings = Settings(queue_urls=(queue.url,), wait_seconds=0, metrics_port=0, pollers=1,
                        max_pollers=0)  # fmt: skip
    service = Service(service_options(settings), {queue.url: queue}, sink, metrics=Metrics())
    service.breaker.record_failure("MongoDB does not answer: timed out")
    server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health)
    server.start()
    service.start()
    try:
        yield server.port
    finally:
        service.stop(deadline_seconds=2)
        server.stop()


def _latencies(port: int, probes: int) -> list[float]:
    took: list[float] = []
    for _ in range(probes):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=30) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:  # 503: not ready, which is the answer
            exc.read()
        took.append(time.perf_counter() - started)
    return took


def _summary(took: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(took) * 1000, "max_ms": max(took) * 1000}


def readyz(probes: int) -> dict[str, Any]:
    hanging = _HangingSink()
    with _serving(hanging) as port:
        hanging.pinging.wait(30)  # the probe job is stuck in ping() from here on
        while_hanging = _latencies(port, probes)
        hanging.release.set()
    answering = MemorySink()
    answering.unavailable = True  # down, but its ping answers at once
    with _serving(answering) as port:
        baseline = _latencies(port, probes)
    return {
        "probes": probes,
        "store_hanging": _summary(while_hanging),
        "store_answering": _summary(baseline),
        "ratio": statistics.median(while_hanging) / statistics.median(baseline),
    }


def close(timeout: float) -> dict[str, Any]:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    port = listener.getsockname()[1]
    os.environ.update({
        "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as journal:
        producer = Producer(f"http://127.0.0.1:{port}/000000000000/q", journal_dir=journal)
        for n in range(5):
            producer.send("events", {"n": n})
        while not held:  # the sender thread is waiting for an answer
            time.sleep(0.01)
        started = time.perf_counter()
        producer.close(timeout=timeout)
        took = time.perf_counter() - started
    listener.close()
    return {"timeout_s": timeout, "took_s": took, "ratio": took / timeout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--close-timeout", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps({"readyz": readyz(args.probes), "close": close(args.close_timeout)}, indent=1))


if __name__ == "__main__":
    main()
