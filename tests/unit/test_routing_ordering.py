"""Routing (allow-list, hooks), FIFO ordering, partitioned hand-off and scaling policy."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from bson import ObjectId

from ingest.errors import ConfigError
from ingest.flow.breaker import SinkBreaker
from ingest.flow.scaling import ScalingPolicy
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox
from ingest.pipeline.route import build_router
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import Message
from ingest.settings import Settings, parse_hooks
from ingest.sinks.base import OutcomeKind, WriteMode, retry
from ingest.sinks.memory import MemorySink
from producer import wire
from producer.wire import PARTITION_ATTRIBUTE


def line(collection: str, **fields: Any) -> str:
    return wire.encode_record(collection, {"_id": fields.pop("_id", None) or ObjectId(), **fields})


def message(*lines: str, mid: str = "m", group: str | None = None) -> Message:
    url = "memory://q.fifo" if group is not None else "memory://q"
    return Message(url, mid, f"r-{mid}", "\n".join(lines), group_id=group)


def stamp(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "checked": True}


def refuse(document: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("amount must be positive")


ROUTED = 42  # not callable: a hook path naming it is a mistake


def test_allow_list_and_prefixes_reject_other_collections_alone() -> None:
    sink = MemorySink()
    router = build_router(["audit"], ["events_"])
    stage = BatchWriter(sink, Metrics(), SinkBreaker(), router=router)
    body = [line("audit"), line("events_eu"), line("secrets"), line("events")]
    settlement = stage.process([message(*body)])
    assert sink.count() == 2
    reasons = sorted(letter.reason for letter in settlement.dead_letters)
    assert reasons == [
        "collection 'events' is not in the allow-list",
        "collection 'secrets' is not in the allow-list",
    ]


def test_hooks_transform_and_a_raising_hook_dead_letters_only_its_record() -> None:
    hooks = parse_hooks(f"audit={__name__}:stamp,payments={__name__}:refuse")
    sink = MemorySink()
    stage = BatchWriter(sink, Metrics(), SinkBreaker(), router=build_router(hooks=hooks))
    settlement = stage.process([message(line("audit", n=1), line("payments", n=2), line("x"))])
    (audit,) = sink.collections["audit"].values()
    assert audit["checked"] is True
    assert sink.count("payments") == 0 and sink.count("x") == 1
    (letter,) = settlement.dead_letters
    assert "rejected the record: amount must be positive" in letter.reason


@pytest.mark.parametrize("spec", ["events", "events=", "=x:y", "events=nomodule"])
def test_bad_hook_specs_are_config_errors_naming_the_variable(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"^INGEST_HOOKS="):
        Settings.from_env({"INGEST_HOOKS": spec})


@pytest.mark.parametrize("path", ["nomodule:fn", f"{__name__}:missing", f"{__name__}:ROUTED"])
def test_hooks_that_cannot_be_loaded_are_config_errors(path: str) -> None:
    with pytest.raises(ConfigError, match="hook"):
        build_router(hooks={"events": path})


def test_fifo_group_after_a_failure_is_not_applied_and_comes_back_in_order() -> None:
    oid = ObjectId()
    calls: list[int] = []

    class FailsOnce(MemorySink):
        def _write_one(self, record: wire.Record):  # type: ignore[no-untyped-def]
            calls.append(record.document["v"])
            if record.document["v"] == 2 and calls.count(2) == 1:
                return retry("write conflict")
            return super()._write_one(record)

    sink = FailsOnce(WriteMode.REPLACE)
    stage = BatchWriter(sink, Metrics(), SinkBreaker())
    batch = [message(line("e", _id=oid, v=v), mid=f"m{v}", group="g") for v in (1, 2, 3)]
    batch.append(message(line("e", v=9), mid="other", group="h"))
    settlement = stage.process(batch)
    assert [m.message_id for m, _ in settlement.retry] == ["m2", "m3"]
    assert calls[:3] == [1, 2, 9]  # 3 was never applied before 2
    assert {m.message_id for m in settlement.delete} == {"m1", "other"}
    again = stage.process([m for m, _ in settlement.retry])
    assert [m.message_id for m in again.delete] == ["m2", "m3"]
    (stored,) = (d for d in sink.collections["e"].values() if d["_id"] == oid)
    assert stored["v"] == 3


def test_memory_sink_ordered_write_stops_at_first_retry() -> None:
    class Flaky(MemorySink):
        def _write_one(self, record: wire.Record):  # type: ignore[no-untyped-def]
            return retry("busy") if record.document["n"] == 1 else super()._write_one(record)

    records = [wire.decode_line(line("e", n=n)) for n in range(3)]
    kinds = [o.kind for o in Flaky().write_ordered(records)]
    assert kinds == [OutcomeKind.WRITTEN, OutcomeKind.RETRY, OutcomeKind.BLOCKED]


def test_partitioned_inbox_keeps_a_key_on_one_lane_in_order() -> None:
    inbox = Inbox(maxsize=100, lanes=4)
    stop = threading.Event()
    for n in range(40):
        key = f"user-{n % 5}"
        m = Message("q", f"m{n}", "r", "", {PARTITION_ATTRIBUTE: {"StringValue": key}})
        assert inbox.put([m], stop, lambda: None) == []
    seen: dict[str, int] = {}
    order: dict[str, list[int]] = {}
    for lane in range(4):
        while not inbox.empty():
            try:
                batch = inbox.get(lane, timeout=0)
            except Exception:
                break
            for m in batch:
                key = str(wire.attribute_value(m.attributes, PARTITION_ATTRIBUTE))
                assert seen.setdefault(key, lane) == lane
                order.setdefault(key, []).append(int(m.message_id[1:]))
    assert all(ids == sorted(ids) for ids in order.values()) and len(order) == 5


def test_inbox_hands_back_what_it_cannot_place_when_stopping() -> None:
    inbox = Inbox(maxsize=1)
    stop = threading.Event()
    first = [Message("q", "a", "r", "")]
    assert inbox.put(first, stop, lambda: None) == []
    stop.set()
    second = [Message("q", "b", "r", "")]
    assert inbox.put(second, stop, lambda: None) == second


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
