"""The consumer's probes in its first hour: /healthz fails when the poll loops have
stopped (and only then, not while they are deliberately paused), and /readyz answers
from kept state while MongoDB hangs, never asking it. In-process, on the in-memory
seams. (How fast /readyz answers is measured by `python -m bench.probes`.)"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ingest.cli.options import service_options
from ingest.errors import SinkUnavailable
from ingest.health import HealthServer
from ingest.metrics import Metrics
from ingest.pipeline.service import Service, ServiceOptions
from ingest.queues.base import Message
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.memory import MemorySink
from tests.support.user_steps import probe
from tests.support.waiting import wait_until

#: The liveness bound the tests run with: the paused pollers check in every second
#: (their wait on the breaker), so three is well above their pace, and short to wait out.
STALL_SECONDS = 3.0


class StuckQueue(MemoryQueue):
    """A queue whose receive never returns: the poll loop stops in it."""

    def __init__(self) -> None:
        super().__init__(url="memory://stuck")
        self.release = threading.Event()
        self.entered = threading.Event()

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]:
        self.entered.set()
        self.release.wait(60)
        return []


def _settings(url: str) -> Settings:
    # The bound is derived from these two: 3 * (0 + min(10, 1)) + 5 = 8 s.
    return Settings(queue_urls=(url,), wait_seconds=0, visibility_timeout=1, metrics_port=0,
                    pollers=1, max_pollers=0)  # fmt: skip


def _options(url: str) -> ServiceOptions:
    """The options `ingest run` builds from the settings, with a shorter liveness bound."""
    return dataclasses.replace(service_options(_settings(url)), poll_stall_seconds=STALL_SECONDS)


@contextmanager
def serving(service: Service) -> Iterator[int]:
    server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health)
    server.start()
    service.start()
    try:
        yield server.port
    finally:
        service.request_stop()
        service.stop(deadline_seconds=2)
        server.stop()


def test_the_bound_comes_from_the_wait_and_visibility_settings() -> None:
    assert Settings().poll_stall_seconds == 3 * (20 + 10) + 5
    assert Settings(wait_seconds=0, visibility_timeout=1).poll_stall_seconds == 8
    assert Settings(wait_seconds=5, visibility_timeout=4).poll_stall_seconds == 3 * 9 + 5
    # ...and reaches the service as `ingest run` builds it.
    assert service_options(_settings("memory://q")).poll_stall_seconds == 8


@pytest.mark.timeout(60)
def test_healthz_fails_when_the_poll_loop_stops_and_not_while_paused() -> None:
    stuck = StuckQueue()
    stalled = Service(_options(stuck.url), {stuck.url: stuck}, MemorySink(), metrics=Metrics())
    # The other consumer is paused on purpose: MongoDB is down, its breaker open.
    idle = MemoryQueue(url="memory://idle")
    down = MemorySink()
    down.unavailable = True
    paused = Service(_options(idle.url), {idle.url: idle}, down, metrics=Metrics())
    paused.breaker.record_failure("MongoDB at db:27017 does not answer: refused")
    with serving(stalled) as stalled_port, serving(paused) as paused_port:
        assert stuck.entered.wait(10)
        status, body, _ = probe(stalled_port, "/healthz")
        assert status == 200 and body == {"alive": True}
        # Once the stuck loop has not gone round for the bound, it is dead.
        assert wait_until(lambda: probe(stalled_port, "/healthz")[0] == 503, interval=0.1)
        status, body, _ = probe(stalled_port, "/healthz")
        assert status == 503 and body["alive"] is False
        assert "1 of 1 pollers have completed no receive for over 3s" in str(body["reason"])
        # Paused as long, on purpose: alive, not ready, and the reason is MongoDB.
        status, body, _ = probe(paused_port, "/healthz")
        assert status == 200 and body == {"alive": True}
        status, body, _ = probe(paused_port, "/readyz")
        assert status == 503 and body["ready"] is False
        assert body["checks"] == {"mongodb": "memory sink is unavailable", "sqs": "ok"}
        assert idle.receive_calls == 0  # paused all along
        stuck.release.set()


@pytest.mark.timeout(60)
def test_readyz_answers_from_kept_state_while_the_database_hangs() -> None:
    """The sink's ping hangs (a server that never answers); /readyz does not ask it."""

    answer = threading.Event()
    pinging = threading.Event()
    pings: list[int] = []

    class HangingSink(MemorySink):
        def ping(self) -> None:
            pings.append(1)
            pinging.set()
            answer.wait(30)
            raise SinkUnavailable("MongoDB at db:27017 does not answer: timed out")

    queue = MemoryQueue(url="memory://q")
    service = Service(
        service_options(_settings(queue.url)), {queue.url: queue}, HangingSink(), metrics=Metrics()
    )
    service.breaker.record_failure("MongoDB at db:27017 does not answer: timed out")
    with serving(service) as port:
        assert pinging.wait(10)  # the probe job is now stuck in ping()
        for _ in range(20):
            status, body, _ = probe(port, "/readyz")
            assert status == 503 and "timed out" in str(body["checks"])
        # Every answer came while the one ping was still hanging: none asked the sink.
        assert pings == [1] and not answer.is_set()
        answer.set()
