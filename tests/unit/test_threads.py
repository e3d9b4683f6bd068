"""Joining the stages' threads by one deadline (ingest/pipeline/threads.py): each thread
gets what is left of it, not a timeout of its own. On a fake clock: a thread that never
ends uses up its whole wait."""

from __future__ import annotations

import threading
import time
import types

import pytest

from ingest.pipeline import threads
from ingest.pipeline.threads import join_by
from tests.support.clocks import FakeClock


class Hung:
    """A thread that never ends: a join waits out its whole timeout (on the fake clock)."""

    def __init__(self, clock: FakeClock, alive: bool = True) -> None:
        self.clock, self.alive = clock, alive
        self.waits: list[float] = []

    def is_alive(self) -> bool:
        return self.alive

    def join(self, timeout: float | None = None) -> None:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.sleep(timeout)


def test_threads_share_one_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(threads, "time", types.SimpleNamespace(monotonic=clock))
    first, ended, second = Hung(clock), Hung(clock, alive=False), Hung(clock)
    join_by([first, ended, second], deadline=clock.now + 5.0)  # type: ignore[list-item]
    assert first.waits == [5.0] and ended.waits == [] and second.waits == [0.0]
    assert clock.now == 1005.0  # five seconds for all of them, not five each


def test_threads_that_end_are_joined() -> None:
    done = threading.Event()
    worker = threading.Thread(target=done.wait)
    worker.start()
    done.set()
    join_by([worker], deadline=time.monotonic() + 30)
    assert not worker.is_alive()
