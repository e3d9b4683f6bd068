"""Circuit breakers per queue and round-robin over several queues."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from producer import Producer
from producer.breaker import Breaker, Router, State
from tests.support.producer_fakes import FakeSQS

A = "http://sqs.local/000000000000/a"
B = "http://sqs.local/000000000000/b"
C = "http://sqs.local/000000000000/c"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_then_half_opens_for_one_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    breaker = Breaker("q", threshold=3, reset_seconds=10, clock=clock)
    caplog.set_level(logging.INFO, logger="producer.breaker")
    breaker.failure()
    breaker.failure()
    assert breaker.state is State.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state is State.OPEN and not breaker.allow()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.allow() and breaker.state is State.HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.failure()  # the probe failed: open again, for a full period
    assert breaker.state is State.OPEN and not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    breaker.success()
    assert breaker.state is State.CLOSED and breaker.failures == 0
    changes = [r.getMessage() for r in caplog.records]
    assert changes == [
        "queue q: circuit closed -> open",
        "queue q: circuit open -> half-open",
        "queue q: circuit half-open -> open",
        "queue q: circuit open -> half-open",
        "queue q: circuit half-open -> closed",
    ]


def test_success_resets_the_consecutive_failure_count() -> None:
    breaker = Breaker("q", threshold=2)
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state is State.CLOSED


def test_router_round_robin_skips_open_breakers() -> None:
    clock = Clock()
    router = Router([A, B, C], lambda url: Breaker(url, threshold=1, reset_seconds=5, clock=clock))
    assert [router.choose() for _ in range(4)] == [A, B, C, A]
    router.breakers[B].failure()
    assert [router.choose() for _ in range(4)] == [C, A, C, A]
    assert router.choose(exclude={A, C}) is None
    clock.now += 5
    assert router.choose(exclude={A, C}) == B  # half-open probe


def test_producer_spreads_batches_over_queues(tmp_path: Path) -> None:
    fake = FakeSQS()
    with Producer([A, B], sqs_client=fake, journal_dir=tmp_path, max_message_bytes=1024) as p:
        for n in range(40):
            p.send("events", {"n": n, "pad": "x" * 300})
            p.flush(5)
    assert len(fake.records(A)) == 20 and len(fake.records(B)) == 20


def test_producer_skips_a_failing_queue_and_loses_nothing(tmp_path: Path) -> None:
    fake = FakeSQS(unreachable={A})
    with Producer([A, B], sqs_client=fake, journal_dir=tmp_path, breaker_threshold=2) as producer:
        for n in range(10):
            producer.send("events", {"n": n})
            assert producer.flush(5)
        breaker = producer._sender._router.breakers[A]
        assert breaker.state is State.OPEN
        assert producer.stats().journaled == 0
    calls_to_a = [url for url, _ in fake.calls if url == A]
    assert len(calls_to_a) == 2  # then the open breaker kept traffic away from A
    assert sorted(r.document["n"] for r in fake.records(B)) == list(range(10))


def test_no_healthy_queue_sends_records_to_the_journal(tmp_path: Path) -> None:
    fake = FakeSQS(unreachable={A, B})
    with Producer(
        [A, B], sqs_client=fake, journal_dir=tmp_path, breaker_threshold=1, probe_seconds=60
    ) as producer:
        for n in range(5):
            producer.send("events", {"n": n})
            assert producer.flush(5)
        assert producer.stats().journaled == 5
    assert len(fake.calls) == 2  # one try per queue, then both breakers are open
