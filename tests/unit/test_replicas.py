"""Replicas sharing the write ceiling (ingest/flow/replicas.py), on a fake clock: who is
live, a joining replica's warm-up, each replica's share, and the write rate every replica
checks in with (what `ingest status` reads)."""

from __future__ import annotations

import types

import pytest

from ingest.flow import replicas
from ingest.flow.ceiling import Ceiling, RateGate
from ingest.flow.replicas import ReplicaRegistry, SharedCeiling
from ingest.metrics import Metrics
from ingest.sinks.memory import MemoryReplicaBoard
from tests.support.clocks import FakeClock


def test_replicas_without_a_ceiling_check_in_with_their_write_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(replicas, "time", types.SimpleNamespace(monotonic=clock))
    board = MemoryReplicaBoard(clock=clock)
    handled = [0]
    check_in = SharedCeiling(ReplicaRegistry(board, 5.0, me="solo", clock=clock), None,
                             handled=lambda: handled[0], per_message=lambda: 25.0)  # fmt: skip
    check_in.beat()
    handled[0] = 500
    clock.sleep(2.0)
    check_in.beat()
    (seen,) = board.live(30.0)
    assert seen["_id"] == "solo" and seen["records_per_message"] == 25.0
    assert seen["write_rate"] == 250.0  # 500 records in 2 s
    assert "ceiling" not in seen and "pool_ceiling" not in seen


def test_a_joining_replica_warms_up_then_takes_its_share_and_the_others_take_up_a_leavers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    monkeypatch.setattr(replicas, "time", types.SimpleNamespace(monotonic=clock))
    board = MemoryReplicaBoard(clock=clock)
    gates = {name: RateGate(Ceiling(900, burst=90), Metrics()) for name in ("a", "b")}
    members = {
        name: SharedCeiling(ReplicaRegistry(board, 5.0, me=name, clock=clock), gate)
        for name, gate in gates.items()
    }
    members["a"].beat()
    assert gates["a"].rate == pytest.approx(900)  # alone: the whole pool
    members["b"].beat()
    assert gates["b"].rate == 0  # a joiner writes nothing until the others have seen it
    members["a"].beat()
    assert gates["a"].rate == pytest.approx(450)
    clock.sleep(1.2 * 5.0)  # a heartbeat and a fifth
    members["a"].beat()
    members["b"].beat()
    assert gates["b"].rate == pytest.approx(450)
    members["b"].leave()
    members["a"].beat()
    assert gates["a"].rate == pytest.approx(900)
    clock.sleep(3 * 5.0)  # missed three heartbeats: no longer live
    assert board.live(15.0) == []
