"""The service's periodic jobs (ingest/pipeline/jobs.py): one run of a job at a time,
skipped quietly while the last one is still going, a failure logged and the job kept;
and the queue-depth job's gauges."""

from __future__ import annotations

import logging
import threading

import pytest

from ingest.metrics import Metrics
from ingest.pipeline.jobs import Jobs, report_depth
from ingest.queues.memory import MemoryQueue
from tests.support.waiting import wait_until


@pytest.mark.timeout(60)
def test_a_job_slower_than_its_interval_is_skipped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A probe stuck on a server that never answers: no scheduler warning per tick."""
    caplog.set_level(logging.DEBUG)
    runs: list[int] = []
    ticks: list[int] = []
    release = threading.Event()

    def slow() -> None:
        runs.append(1)
        release.wait(30)

    jobs = Jobs()
    # Every half second, as the service's probe of MongoDB runs.
    jobs.every(0.5, slow, "slow-probe")
    jobs.every(0.5, lambda: ticks.append(1), "ticker")  # shows the scheduler going round
    jobs.start()
    try:
        assert wait_until(lambda: runs and len(ticks) >= 4)
        assert len(runs) == 1  # due three times more meanwhile: one run at a time
        release.set()
        assert wait_until(lambda: len(runs) >= 2)  # the next one soon after
    finally:
        release.set()
        jobs.stop()
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], noisy


@pytest.mark.timeout(60)
def test_a_failing_job_is_logged_and_keeps_its_schedule(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ingest.pipeline.jobs")

    def failing() -> None:
        raise RuntimeError("a bug")

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "periodic job flaky failed"]

    jobs = Jobs()
    jobs.every(0.05, failing, "flaky")
    jobs.start()
    try:
        assert wait_until(lambda: len(failures()) >= 3)  # it ran again after each failure
    finally:
        jobs.stop()
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in failures())


def test_report_depth_sets_the_dead_letter_gauge() -> None:
    """What the service's queue-depth job (every 10 s) sets: the dashboard's and the
    alerts' dead-letter depth, per source queue."""
    dead = MemoryQueue(url="memory://dlq")
    queue = MemoryQueue(url="memory://q", dead_letter_queue=dead)
    plain = MemoryQueue(url="memory://plain")
    for n in range(2):
        dead.send(f"dead-{n}")
    queue.send("waiting")
    metrics = Metrics()
    report_depth({queue.url: queue, plain.url: plain}, metrics)
    registry = metrics.registry
    assert registry.get_sample_value("ingest_dead_letter_messages", {"queue": queue.url}) == 2
    assert registry.get_sample_value("ingest_queue_visible_messages", {"queue": queue.url}) == 1
    # No dead-letter queue: no series (not a misleading 0).
    assert registry.get_sample_value("ingest_dead_letter_messages", {"queue": plain.url}) is None
