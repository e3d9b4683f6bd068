"""The write ceiling on a fake clock: token bucket bounds, debt for big bulks, AIMD."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import pytest
from bson import ObjectId

from ingest.cli.options import service_options
from ingest.errors import ConfigError
from ingest.flow.aimd import Aimd, AimdController
from ingest.flow.breaker import SinkBreaker
from ingest.flow.ceiling import Ceiling, RateGate, TokenBucket, build_gate
from ingest.flow.pacer import Pacer, RecordsPerMessage
from ingest.metrics import Metrics
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import Message
from ingest.settings import RateMode, Settings
from ingest.sinks.base import Outcome
from ingest.sinks.memory import MemorySink
from producer import wire


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _max_in_window(grants: list[tuple[float, int]], window: float = 1.0) -> int:
    """Largest sum of grants within any closed window [t, t + window]."""
    best = 0
    for i, (start, _) in enumerate(grants):
        total = sum(n for t, n in grants[i:] if t <= start + window + 1e-9)
        best = max(best, total)
    return best


def test_bucket_never_grants_more_than_rate_plus_burst_in_any_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 100, clock=clock, sleep=clock.sleep)
    rng = random.Random(7)
    grants: list[tuple[float, int]] = []
    for _ in range(2000):
        if rng.random() < 0.1:  # idle spells let the bucket refill to its burst
            clock.sleep(rng.uniform(0, 0.5))
        n = rng.randint(1, 100)
        bucket.acquire(n)
        grants.append((clock.now, n))
    assert _max_in_window(grants) <= 1000 + 100
    span = grants[-1][0] - grants[0][0]
    assert sum(n for _, n in grants) <= 1000 * span + 100  # the long-run rate holds too


def test_backlogged_bucket_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(500, 25, clock=clock, sleep=clock.sleep)
    started = clock.now
    for _ in range(400):
        bucket.acquire(25)
    assert clock.now - started == pytest.approx((400 * 25 - 25) / 500)


def test_bulk_larger_than_burst_goes_on_a_full_bucket_and_the_next_writer_pays() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 10, clock=clock, sleep=clock.sleep)
    assert bucket.acquire(510) == 0.0  # 51 bursts' worth: no deadlock, the bucket goes into debt
    assert bucket.acquire(10) == pytest.approx(5.1)  # the next writer waits the debt out


def test_debt_tells_the_pollers_how_far_behind_the_writers_are() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 10, clock=clock, sleep=clock.sleep)
    bucket.acquire(310)
    assert bucket.debt_seconds() == pytest.approx(3.0)
    clock.sleep(2.5)
    assert bucket.debt_seconds() == pytest.approx(0.5)


def _run_writers(
    bucket: TokenBucket, *, writers: int, bulk: int, seconds: float
) -> tuple[float, list[tuple[float, int]]]:
    """Real threads on the real clock taking `bulk` tokens for `seconds`: the start
    time and every grant (when acquire returned, how many)."""
    grants: list[tuple[float, int]] = []
    lock = threading.Lock()
    start = time.monotonic()

    def writer() -> None:
        while time.monotonic() - start < seconds:
            bucket.acquire(bulk)
            with lock:
                grants.append((time.monotonic(), bulk))

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return start, grants


def test_late_wake_ups_do_not_bunch_bulks_into_one_second() -> None:
    """A busy CPU wakes writers late. The bound must hold on when bulks really start:
    with tokens reserved ahead, 8 writers woken up to 30 ms late gave 1040 here."""
    rng = random.Random(3)

    def late_sleep(seconds: float) -> None:
        time.sleep(seconds + rng.choice([0.0, 0.0, 0.03]))

    bucket = TokenBucket(1000, 10, sleep=late_sleep)
    _, grants = _run_writers(bucket, writers=8, bulk=10, seconds=2.0)
    assert _max_in_window(sorted(grants)) <= 1000 + 10 + 10  # one bulk of recording jitter


def test_closed_bucket_waits_for_a_rate_then_grants() -> None:
    bucket = TokenBucket(0, 10)
    done = threading.Event()

    def writer() -> None:
        bucket.acquire(5)
        done.set()

    threading.Thread(target=writer, daemon=True).start()
    assert not done.wait(0.3)  # closed: a joining replica warms up
    bucket.set_rate(1000)
    assert done.wait(2.0)


def test_many_threads_share_one_bucket_without_exceeding_it() -> None:
    bucket = TokenBucket(2000, 50)
    start, grants = _run_writers(bucket, writers=4, bulk=50, seconds=0.5)
    span = grants[-1][0] - start
    assert sum(n for _, n in grants) <= 2000 * span + 50 + 4 * 50


# --------------------------------------------------------------------- AIMD


def _controller(clock: FakeClock) -> AimdController:
    return AimdController(Aimd(target_seconds=0.05), low=100, high=1000, clock=clock)


def _window(
    aimd: AimdController, clock: FakeClock, latency: float, *, limited: bool = True
) -> float:
    rate = None
    for _ in range(10):
        if limited:
            aimd.waited()
        clock.sleep(0.11)
        rate = aimd.observe(latency, overloaded=False) or rate
    assert rate is not None
    return rate


def test_aimd_backs_off_multiplicatively_when_latency_exceeds_target() -> None:
    clock = FakeClock()
    aimd = _controller(clock)
    assert _window(aimd, clock, 0.2) == pytest.approx(800)
    assert _window(aimd, clock, 0.2) == pytest.approx(640)


def test_aimd_halves_at_once_on_overload_and_stops_at_the_floor() -> None:
    clock = FakeClock()
    aimd = _controller(clock)
    assert aimd.observe(0.01, overloaded=True) == pytest.approx(500)
    for _ in range(10):
        aimd.observe(0.01, overloaded=True)
    assert aimd.rate == pytest.approx(100)


def test_aimd_climbs_back_additively_when_latency_recovers() -> None:
    clock = FakeClock()
    aimd = _controller(clock)
    for _ in range(20):
        _window(aimd, clock, 0.5)
    assert aimd.rate == pytest.approx(100)
    rates = [_window(aimd, clock, 0.01) for _ in range(9)]
    assert rates[0] == pytest.approx(190)  # +10% of the span per window
    assert rates[-1] == pytest.approx(910)
    assert _window(aimd, clock, 0.01) == pytest.approx(1000)  # capped


def test_aimd_climbs_slowly_near_the_rate_that_was_last_too_slow() -> None:
    clock = FakeClock()
    aimd = _controller(clock)
    assert _window(aimd, clock, 0.2) == pytest.approx(800)  # too slow at 1000
    # A full step (+90) would land within 85% of 1000: +1% of the span instead.
    assert _window(aimd, clock, 0.01) == pytest.approx(809)
    for _ in range(21):
        _window(aimd, clock, 0.01)
    assert aimd.rate == pytest.approx(998)
    assert _window(aimd, clock, 0.01) == pytest.approx(1000)  # the cap, at the slow pace
    aimd.observe(0.01, overloaded=True)  # halved to 500: far below the wall, a full step
    assert _window(aimd, clock, 0.01) == pytest.approx(590)
    assert _window(aimd, clock, 0.01) == pytest.approx(680)
    assert _window(aimd, clock, 0.01) == pytest.approx(770)
    assert _window(aimd, clock, 0.01) == pytest.approx(779)  # +90 would reach 850


def test_aimd_does_not_climb_while_nobody_waits_for_tokens() -> None:
    clock = FakeClock()
    aimd = _controller(clock)
    _window(aimd, clock, 0.5)
    assert _window(aimd, clock, 0.01, limited=False) == pytest.approx(800)


# --------------------------------------------------------------------- gate


def test_gate_takes_its_share_of_the_pool_and_splits_bulks_to_its_burst() -> None:
    clock = FakeClock()
    metrics = Metrics()
    gate = RateGate(Ceiling(900, burst=90), metrics, clock=clock, sleep=clock.sleep)
    gate.set_replicas(3)
    assert gate.rate == pytest.approx(300)
    assert gate.max_bulk() == 30
    assert metrics.registry.get_sample_value("ingest_live_replicas") == 3
    assert metrics.registry.get_sample_value("ingest_write_ceiling_records_per_second") == 300
    gate.set_replicas(2)  # a replica died: the others take up its share
    assert gate.rate == pytest.approx(450)
    gate.set_replicas(3, warming=True)
    assert gate.rate == 0


def test_gate_counts_tokens_and_waits() -> None:
    clock = FakeClock()
    metrics = Metrics()
    gate = RateGate(Ceiling(100, burst=10), metrics, clock=clock, sleep=clock.sleep)
    gate.acquire(10)
    gate.acquire(50)  # waits for a full bucket (0.1 s), leaves 40 owed
    gate.acquire(10)  # waits the debt and its own tokens out (0.5 s)
    assert metrics.registry.get_sample_value("ingest_write_tokens_granted_total") == 70
    assert metrics.registry.get_sample_value("ingest_write_gate_wait_seconds_sum") == (
        pytest.approx(0.6)
    )


def test_adaptive_gate_follows_latency_and_overload() -> None:
    clock = FakeClock()
    ceiling = Ceiling(1000, mode=RateMode.ADAPTIVE, target_seconds=0.05, min_rate=100)
    gate = RateGate(ceiling, Metrics(), clock=clock, sleep=clock.sleep)
    gate.observe(100, 0.01, overloaded=True)
    assert gate.rate == pytest.approx(500)
    gate.set_replicas(2)  # shares bounds too: the cap becomes 500, the floor 50
    for _ in range(10):
        gate.observe(100, 0.01, overloaded=True)
    assert gate.rate == pytest.approx(50)


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


def test_settings_and_build_gate() -> None:
    settings = Settings.from_env(
        {"INGEST_MAX_WRITE_RATE": "2000", "INGEST_WRITE_RATE": "adaptive"},
        target_write_latency="50ms",
    )
    assert settings.target_write_latency == pytest.approx(0.05)
    gate = build_gate(service_options(settings).ceiling)
    assert gate is not None and gate.max_bulk() == 40 and gate.ceiling.floor == 40
    assert build_gate(service_options(Settings()).ceiling) is None
    for wrong in (
        {"INGEST_WRITE_RATE": "adaptive"},
        {"INGEST_MAX_WRITE_RATE": "100", "INGEST_MIN_WRITE_RATE": "200"},
        {"INGEST_MAX_WRITE_RATE": "100", "INGEST_WRITE_RATE": "sometimes"},
    ):
        with pytest.raises(ConfigError):
            Settings.from_env(wrong)


# --------------------------------------------------------------- write stage


class CountingSink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.bulks: list[int] = []

    def write(self, records: Sequence[wire.Record]) -> list[Outcome]:
        self.bulks.append(len(records))
        return super().write(records)


def _message(count: int, mid: str) -> Message:
    lines = [wire.encode_record("events", {"_id": ObjectId(), "n": n}) for n in range(count)]
    return Message("memory://q", mid, f"r-{mid}", "\n".join(lines))


def test_write_stage_splits_batches_to_the_gates_bulk_size_and_paces_them() -> None:
    clock = FakeClock()
    gate = RateGate(Ceiling(1000, burst=40), clock=clock, sleep=clock.sleep)
    sink = CountingSink()
    stage = BatchWriter(sink, Metrics(), SinkBreaker(), gate)
    started = clock.now
    settlement = stage.process([_message(100, "m1"), _message(30, "m2")])
    assert sink.bulks == [40, 40, 40, 10]
    assert sink.count("events") == 130 and len(settlement.delete) == 2
    assert clock.now - started == pytest.approx((130 - 40) / 1000)


def test_write_stage_without_a_gate_handles_a_batch_of_only_bad_records() -> None:
    sink = CountingSink()
    no_id = wire.encode_record("events", {"n": 1})
    settlement = BatchWriter(sink, Metrics(), SinkBreaker()).process([message_of(no_id)])
    assert sink.bulks == [] and len(settlement.dead_letters) == 1


def message_of(*lines: str) -> Message:
    return Message("memory://q", "m", "r-m", "\n".join(lines))


def _simulate(gate: RateGate, clock: FakeClock, seconds: float, capacity: float) -> list[float]:
    """Writers enough that the ceiling is what limits them, against a store whose bulk
    latency grows with the rate it is given (50 ms, the target, at 2/3 of `capacity`);
    returns the gate's rate, every second."""
    rates: list[float] = []
    ends, next_sample = clock.now + seconds, clock.now
    while clock.now < ends:
        gate.acquire(40)
        latency = 0.01 + 0.06 * gate.rate / capacity  # in parallel with the next bulks
        gate.observe(40, latency, overloaded=False)
        if clock.now >= next_sample:
            rates.append(gate.rate)
            next_sample += 1.0
    return rates


def test_adaptive_ceiling_backs_off_under_a_competing_load_and_climbs_back() -> None:
    """The controller's dynamics, deterministic: a competing load makes MongoDB slow at
    a third of the cap; the ceiling settles near what holds the target, then climbs back
    to the cap once the load goes. (How fast on real servers: make demo-peak.)"""
    clock = FakeClock()
    cap = 4000.0
    ceiling = Ceiling(cap, burst=40, mode=RateMode.ADAPTIVE, target_seconds=0.05)
    gate = RateGate(ceiling, clock=clock, sleep=clock.sleep)
    calm = _simulate(gate, clock, 20, capacity=10 * cap)
    assert calm[-1] == cap  # fast enough everywhere: the cap holds
    loaded = _simulate(gate, clock, 30, capacity=2000)  # holds 50 ms at about 1333/s
    assert max(loaded[-10:]) <= 1.1 * 1333 and min(loaded[-10:]) >= 0.75 * 1333
    recovered = _simulate(gate, clock, 60, capacity=10 * cap)
    back = next(i for i, rate in enumerate(recovered) if rate >= 0.8 * cap)
    assert back <= 20, recovered
    assert max(calm + loaded + recovered) <= cap
