"""Scaling by depth (ingest/flow/scaling.py): how many pollers a queue deserves, and the
receive stage following it one poller at a time."""

from __future__ import annotations

import time

import pytest

from ingest.flow.breaker import SinkBreaker
from ingest.flow.scaling import ScalingPolicy
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.receive import ReceiveOptions, ReceiveStage, Wiring
from ingest.queues.memory import MemoryQueue
from tests.support.waiting import wait_until


@pytest.mark.parametrize(
    ("visible", "running", "latency", "full", "expected"),
    [
        (0, 3, 0.1, False, 2),  # empty queue: shed a poller
        (0, 1, 0.1, False, 1),  # never below the floor
        (5000, 2, 0.1, False, 3),  # backlog and fast writes: add one
        (5000, 4, 0.1, False, 4),  # never above the ceiling
        (5000, 2, 3.0, False, 2),  # slow writes: more pollers would not help
        (5000, 2, 0.1, True, 2),  # writers behind: hold
        (50, 2, 0.1, False, 2),  # small backlog: enough pollers
    ],
)
def test_scaling_policy(
    visible: int, running: int, latency: float, full: bool, expected: int
) -> None:
    assert ScalingPolicy(1, 4).desired(visible, running, latency, full) == expected


@pytest.mark.timeout(60)
def test_the_receive_stage_adds_a_poller_for_a_backlog_and_sheds_one_when_empty() -> None:
    queue = MemoryQueue("memory://q")
    breaker = SinkBreaker()
    breaker.record_failure("MongoDB down")  # the pollers pause: the backlog stays visible
    wiring = Wiring(Inbox(8), Outbox(), InFlight(), breaker, Metrics(),
                    ReceiveOptions(wait_seconds=0))  # fmt: skip
    stage = ReceiveStage({queue.url: queue}, wiring, 1, ScalingPolicy(1, 3, backlog_per_poller=10))
    stage.start()
    try:
        for n in range(25):
            queue.send(f"m{n}")
        stage.scale(write_seconds=0.1)
        assert len(stage.running()) == 2 and all(p.thread.is_alive() for p in stage.pollers)
        stage.scale(write_seconds=0.1)
        stage.scale(write_seconds=0.1)  # 25 visible: 3 pollers is the ceiling
        assert len(stage.running()) == 3
        queue.purge()
        stage.scale(write_seconds=0.1)
        shed = [p for p in stage.pollers if p.stopping.is_set()]
        assert len(stage.running()) == 2 and len(shed) == 1
        assert wait_until(lambda: not shed[0].thread.is_alive())  # it ends its loop
    finally:
        stage.stop()
        stage.join(time.monotonic() + 10)
    assert queue.receive_calls == 0  # paused all along: scaling never made one receive
