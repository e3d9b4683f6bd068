"""Deterministic ids, the checkpoint file and the backfill's rate (the flow's token bucket)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.errors import CheckpointError
from ingest.flow.ceiling import TokenBucket
from ingest.tools.checkpoint import Checkpoint
from ingest.tools.ids import derive_object_id, timestamp_of
from tests.support.clocks import FakeClock


def test_derived_ids_are_stable_and_distinct() -> None:
    a = derive_object_id("ops.jsonl", 1)
    assert a == derive_object_id("ops.jsonl", 1)
    assert len({a, derive_object_id("ops.jsonl", 2), derive_object_id("other.jsonl", 1)}) == 3


def test_derived_id_carries_the_record_time_when_given() -> None:
    moment = datetime(2023, 3, 4, 5, 6, 7, tzinfo=UTC)
    oid = derive_object_id("f", 9, timestamp_of(moment))
    assert oid.generation_time == moment
    assert oid != derive_object_id("f", 10, timestamp_of(moment))
    assert timestamp_of("2023-03-04T05:06:07Z") == int(moment.timestamp())
    with pytest.raises(ValueError):
        timestamp_of("yesterday")


def test_checkpoint_round_trip_and_queue_guard(tmp_path: Path) -> None:
    path = tmp_path / "cp" / "c.json"
    cp = Checkpoint.load(path, "q1")
    cp.advance("a", 10)
    cp.advance("a", 5)  # never moves back
    cp.finish("b")
    cp.save()
    again = Checkpoint.load(path, "q1")
    assert again.position("a") == 10 and again.is_done("b") and not again.is_done("a")
    assert [p.name for p in path.parent.iterdir()] == ["c.json"]  # no temp files left
    with pytest.raises(CheckpointError, match="written for q1"):
        Checkpoint.load(path, "q2")
    path.write_text(json.dumps({"queue_url": "q1"}))
    with pytest.raises(CheckpointError, match="not a backfill checkpoint"):
        Checkpoint.load(path, "q1")


def test_the_backfill_rate_holds() -> None:
    clock = FakeClock()
    pacer = TokenBucket(2000, 20, clock=clock, sleep=clock.sleep)  # what --rate 2000 builds
    started = clock.now
    for _ in range(400):
        pacer.acquire(1)
    # 400 records at 2000/s: 0.2 s, less the burst of 20 let through at once.
    assert clock.now - started == pytest.approx((400 - 20) / 2000)
