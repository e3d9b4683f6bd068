"""The pollers' pace under a write ceiling (ingest/flow/pacer.py), on a fake clock."""

from __future__ import annotations

import pytest

from ingest.flow.ceiling import Ceiling, RateGate
from ingest.flow.pacer import Pacer, RecordsPerMessage
from ingest.metrics import Metrics
from tests.support.clocks import FakeClock


def test_pollers_receive_only_what_a_second_of_writing_uses() -> None:
    clock = FakeClock()
    metrics = Metrics()
    gate = RateGate(Ceiling(1000, burst=10), metrics, clock=clock, sleep=clock.sleep)
    held: list[int] = []
    per_message = RecordsPerMessage()
    pacer = Pacer(gate, held, per_message, sleep=clock.sleep)
    assert pacer.ready(1.0) == 10  # nothing held, nothing learnt yet: a full batch
    per_message.observe(10, 1000)  # 100 records a message: 10 messages is a second
    held.extend(range(7))
    assert pacer.ready(1.0) == 3  # 700 records held: room for 300 more
    held.extend(range(3))
    started = clock.now
    assert pacer.ready(1.0) == 0  # a second's worth held: wait (and say so after the timeout)
    assert clock.now - started == pytest.approx(1.0)
    held.clear()
    gate.set_replicas(4)  # 250 records a second: less than three messages
    assert pacer.ready(0.2) == 2
    gate.set_replicas(40)  # 25 a second: one message is worth more, but with none held take one
    assert pacer.ready(0.2) == 1
    gate.set_replicas(2, warming=True)
    assert pacer.ready(0.2) == 0  # a warming replica receives nothing
    gate.set_replicas(2)
    assert pacer.ready(0.2) == 5
    gate.acquire(2000)  # writers already two seconds behind
    assert pacer.ready(0.2) == 0


def test_records_per_message_is_learnt_and_one_before_anything_is_seen() -> None:
    per_message = RecordsPerMessage()
    assert per_message.value == 1.0
    per_message.observe(2, 0)  # only bad records so far: nothing learnt
    assert per_message.value == 1.0
    per_message.observe(2, 30)
    assert per_message.value == 7.5
