"""The consumer's probes in its first hour: /healthz fails when the poll loops have
stopped (and only then, not while they are deliberately paused), and /readyz answers
at once from kept state while MongoDB is down. In-process, on the in-memory seams."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ingest.cli.options import service_options
from ingest.errors import SinkUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.health import HealthServer
from ingest.metrics import Metrics
from ingest.pipeline.jobs import Jobs
from ingest.pipeline.service import Service
from ingest.queues.base import Message
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.memory import MemorySink
from tests.support.user_steps import probe


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
        self.release.wait()
        return []


def _settings(url: str) -> Settings:
    # The bound is derived from these two: 3 * (0 + min(10, 1)) + 5 = 8 s.
    return Settings(queue_urls=(url,), wait_seconds=0, visibility_timeout=1, metrics_port=0,
                    pollers=1, max_pollers=0)  # fmt: skip


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


def test_healthz_fails_when_the_poll_loop_stops_and_not_while_paused() -> None:
    stuck = StuckQueue()
    stalled = Service(
        service_options(_settings(stuck.url)), {stuck.url: stuck}, MemorySink(), metrics=Metrics()
    )
    # The other consumer is paused on purpose: MongoDB is down, its breaker open.
    idle = MemoryQueue(url="memory://idle")
    down = MemorySink()
    down.unavailable = True
    paused = Service(
        service_options(_settings(idle.url)), {idle.url: idle}, down, metrics=Metrics()
    )
    paused.breaker.record_failure("MongoDB at db:27017 does not answer: refused")
    bound = stalled.options.poll_stall_seconds
    with serving(stalled) as stalled_port, serving(paused) as paused_port:
        assert stuck.entered.wait(5)
        status, body, _ = probe(stalled_port, "/healthz")
        assert status == 200 and body == {"alive": True}
        time.sleep(bound + 1.5)
        status, body, _ = probe(stalled_port, "/healthz")
        assert status == 503 and body["alive"] is False
        assert "1 of 1 pollers have completed no receive for over 8s" in str(body["reason"])
        # Paused as long, on purpose: alive, not ready, and the reason is MongoDB.
        status, body, _ = probe(paused_port, "/healthz")
        assert status == 200 and body == {"alive": True}
        status, body, _ = probe(paused_port, "/readyz")
        assert status == 503 and body["ready"] is False
        assert body["checks"] == {"mongodb": "memory sink is unavailable", "sqs": "ok"}
        stuck.release.set()


def test_readyz_answers_from_kept_state_while_the_database_hangs() -> None:
    """The sink's ping hangs (a server that never answers); /readyz does not ask it."""

    answer = threading.Event()

    class HangingSink(MemorySink):
        def ping(self) -> None:
            answer.wait(30)
            raise SinkUnavailable("MongoDB at db:27017 does not answer: timed out")

    queue = MemoryQueue(url="memory://q")
    service = Service(
        service_options(_settings(queue.url)), {queue.url: queue}, HangingSink(), metrics=Metrics()
    )
    service.breaker.record_failure("MongoDB at db:27017 does not answer: timed out")
    with serving(service) as port:
        time.sleep(1.5)  # the probe job is now stuck in ping()
        timings = []
        for _ in range(20):
            status, body, took = probe(port, "/readyz")
            assert status == 503 and "timed out" in str(body["checks"])
            timings.append(took)
        assert sorted(timings)[len(timings) // 2] < 0.05, timings
        assert max(timings) < 0.5, timings
        answer.set()


def test_the_breaker_says_once_and_probes_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    breaker = SinkBreaker(clock=lambda: now[0])
    pings: list[float] = []

    class Down:
        def ping(self) -> None:
            pings.append(now[0])
            raise SinkUnavailable("MongoDB at db:27017 does not answer: refused")

    caplog.set_level(logging.DEBUG)
    breaker.record_failure("MongoDB at db:27017 does not answer: refused")
    for step in range(241):  # two minutes of the probe job's 0.5 s ticks
        now[0] = step * 0.5
        breaker.probe(Down())
    assert pings == [1, 3, 7, 15, 31, 61, 91]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "MongoDB at db:27017 does not answer: refused; pausing the pollers, "
        "probing every 1-30s until it answers"
    ]


def test_a_store_that_answers_probes_but_fails_writes_keeps_the_backoff() -> None:
    """FerretDB answering a read while its writes hang: each relapse soon after closing
    keeps the longer probe interval, so the write path is not hammered every second."""
    now = [0.0]
    breaker = SinkBreaker(clock=lambda: now[0])
    pings: list[float] = []

    class AnswersReads:
        def ping(self) -> None:
            pings.append(now[0])

    breaker.record_failure("writes time out")
    for step in range(400):
        now[0] = step * 0.5
        breaker.probe(AnswersReads())
        if not breaker.is_open:  # the next write fails at once
            breaker.record_failure("writes time out")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert gaps[:5] == [2, 4, 8, 16, 30] and set(gaps[5:]) == {30}
    now[0] = 1000.0
    breaker.probe(AnswersReads())
    assert not breaker.is_open
    breaker.record_success()  # a write went through: the next failure starts afresh
    now[0] = 1100.0
    breaker.record_failure("again, later")
    now[0] = 1101.0
    breaker.probe(AnswersReads())
    assert pings[-1] == 1101.0


def test_a_job_slower_than_its_interval_is_skipped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A probe stuck on a server that never answers: no scheduler warning per tick."""
    caplog.set_level(logging.DEBUG)
    runs: list[float] = []

    def slow() -> None:
        runs.append(time.monotonic())
        time.sleep(1.2)

    jobs = Jobs()
    jobs.every(0.1, slow, "slow-probe")
    jobs.start()
    time.sleep(3.0)
    jobs.stop()
    assert 2 <= len(runs) <= 3, runs  # one at a time, the next soon after
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], noisy
