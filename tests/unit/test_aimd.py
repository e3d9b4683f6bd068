"""The adaptive ceiling's controller (ingest/flow/aimd.py) on a fake clock: additive
increase, multiplicative decrease, slow near the rate that was last too slow."""

from __future__ import annotations

import pytest

from ingest.flow.aimd import Aimd, AimdController
from tests.support.clocks import FakeClock


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
