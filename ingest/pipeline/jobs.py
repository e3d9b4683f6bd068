"""The service's periodic jobs, on one APScheduler background scheduler.

A job that is still running when its next run is due is skipped quietly: a probe
waiting on a server that does not answer must not fill the log with APScheduler's
"maximum number of running instances reached" every second."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from apscheduler.schedulers.background import BackgroundScheduler

from ingest.errors import QUEUE_CALL_FAILED
from ingest.metrics import Metrics
from ingest.queues.base import MessageQueue

log = logging.getLogger(__name__)
_INSTANCES = 8


class Jobs:
    def __init__(self) -> None:
        self._scheduler = BackgroundScheduler(daemon=True)

    def every(self, seconds: float, job: Callable[[], None], name: str) -> None:
        busy = threading.Lock()

        def run() -> None:
            if not busy.acquire(blocking=False):
                return  # the last run is still going
            try:
                job()
            except Exception:
                log.exception("periodic job %s failed", name)
            finally:
                busy.release()

        # One runs; the others only find the lock taken and return. Room for several of
        # those: on a loaded machine a skipped one may not have returned before the
        # next is due, and APScheduler warns when it cannot start one. A run that starts
        # late still runs (no grace limit): APScheduler would warn "was missed by" for
        # each one that a busy machine delays past a second, and skip it.
        self._scheduler.add_job(
            run, "interval", seconds=seconds, id=name, max_instances=_INSTANCES,
            coalesce=True, misfire_grace_time=None,
        )  # fmt: skip

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)


def report_depth(queues: Mapping[str, MessageQueue], metrics: Metrics) -> None:
    """Queue and dead-letter depths as gauges (what the dashboard and alerts read)."""
    for url, source in queues.items():
        try:
            depth = source.depth()
            dead = source.dead_letter_depth()
        except QUEUE_CALL_FAILED:
            continue
        metrics.queue_visible.labels(url).set(depth.visible)
        metrics.queue_in_flight.labels(url).set(depth.in_flight)
        if dead is not None:
            metrics.dead_letter_depth.labels(url).set(dead.visible + dead.in_flight)
