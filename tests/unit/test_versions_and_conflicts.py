"""Version-guarded writes and conflicting duplicates through the write stage and the
whole service, on the in-memory seams; their settings and their one-line mistakes."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId

from ingest.cli.options import service_options
from ingest.errors import ConfigError
from ingest.flow.breaker import SinkBreaker
from ingest.logs import Throttled
from ingest.metrics import Metrics
from ingest.pipeline.service import Service
from ingest.pipeline.settle import SettleOptions, Settler
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import Message
from ingest.queues.memory import MemoryQueue
from ingest.settings import Settings
from ingest.sinks.base import ConflictPolicy, WriteMode
from ingest.sinks.memory import MemorySink
from producer import wire

INGEST = Path(sys.executable).with_name("ingest")


def message(*lines: str, mid: str = "m1") -> Message:
    return Message("memory://q", mid, f"r-{mid}", "\n".join(lines))


def line(collection: str = "events", **document: Any) -> str:
    return wire.encode_record(
        collection, {"_id": document.pop("_id", None) or ObjectId(), **document}
    )


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


# ----------------------------------------------------------------- versions


def test_stale_records_are_counted_and_their_message_deleted_not_dead_lettered() -> None:
    sink = MemorySink(WriteMode.REPLACE, version_field="v")
    metrics = Metrics()
    writer = BatchWriter(sink, metrics, SinkBreaker())
    oid = ObjectId()
    writer.process([message(line(_id=oid, v=5, n=5))])
    settlement = writer.process([message(line(_id=oid, v=3, n=3), line(_id=oid, v=4), mid="m2")])
    assert [m.message_id for m in settlement.delete] == ["m2"] and not settlement.dead_letters
    assert value(metrics, "ingest_records_stale_total") == 2
    assert sink.find("events", oid)["n"] == 5  # type: ignore[index]


def test_a_record_without_a_version_is_dead_lettered_with_its_reason() -> None:
    writer = BatchWriter(MemorySink(WriteMode.MERGE, version_field="v"), Metrics(), SinkBreaker())
    settlement = writer.process([message(line(v=1), line(n=1))])
    (letter,) = settlement.dead_letters
    assert letter.reason == "the record has no version: field v is missing"
    assert '"n":1' in letter.body


def test_ten_shuffled_versions_with_redeliveries_end_at_the_highest() -> None:
    """The service over the in-memory seams: 10 versions of 200 _ids, shuffled, each
    message sent twice, four writers. (The same on the real stack, with two consumer
    processes: tests/reliability/test_versioned_writes.py.)"""
    shuffle = random.Random(20261201)
    ids = [ObjectId() for _ in range(200)]
    lines = [line(_id=oid, v=v, n=v) for oid in ids for v in range(1, 11)]
    shuffle.shuffle(lines)
    queue = MemoryQueue("memory://q")
    bodies = ["\n".join(lines[i : i + 25]) for i in range(0, len(lines), 25)]
    for body in bodies + bodies:  # every message delivered twice
        queue.send(body, wire.message_attributes(wire.IDENTITY, body.count("\n") + 1))
    sink = MemorySink(WriteMode.REPLACE, version_field="v")
    base = dict(queue_urls=("memory://q",), wait_seconds=0, metrics_port=0, exit_when_idle=0.3)
    settings = Settings(**base, writers=4, write_mode=WriteMode.REPLACE, version_field="v")  # type: ignore[arg-type]
    service = Service(service_options(settings), {"memory://q": queue}, sink)
    service.start()
    assert service.wait(30), "service did not go idle"
    service.stop()
    assert all(sink.find("events", oid)["v"] == 10 for oid in ids)  # type: ignore[index]
    stale = value(service.metrics, "ingest_records_stale_total")
    duplicate = value(service.metrics, "ingest_records_duplicate_total")
    written = value(service.metrics, "ingest_records_written_total")
    assert written + stale + duplicate == 2 * len(lines)
    # Every second delivery of a version still stored is a duplicate: at least v10's.
    assert stale > 0 and duplicate >= len(ids) and written >= len(ids) and len(queue) == 0


# ---------------------------------------------------------------- conflicts


def _conflicting(policy: ConflictPolicy) -> tuple[Metrics, Any, ObjectId]:
    sink = MemorySink(check_conflicts=policy is not ConflictPolicy.IGNORE)
    metrics = Metrics()
    settler = Settler(SettleOptions(on_conflict=policy))
    writer = BatchWriter(sink, metrics, SinkBreaker(), settler=settler)
    oid = ObjectId()
    first = line(_id=oid, n=1)
    writer.process([message(first)])
    settlement = writer.process([message(first, line(_id=oid, n=2), line(), mid="m2")])
    return metrics, settlement, oid


def test_a_conflicting_duplicate_is_counted_by_collection_and_its_message_deleted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="ingest.pipeline.write"):
        metrics, settlement, oid = _conflicting(ConflictPolicy.COUNT)
    assert [m.message_id for m in settlement.delete] == ["m2"] and not settlement.dead_letters
    assert value(metrics, "ingest_records_conflicting_total", collection="events") == 1
    assert value(metrics, "ingest_records_duplicate_total") == 1  # the redelivery beside it
    assert f"conflicting duplicate in events: _id {oid} is stored with other content" in caplog.text


def test_with_dead_letter_a_conflicting_duplicate_goes_to_the_dead_letter_queue() -> None:
    metrics, settlement, _ = _conflicting(ConflictPolicy.DEAD_LETTER)
    (letter,) = settlement.dead_letters
    assert letter.reason.startswith("conflicting duplicate: collection events already holds")
    assert letter.reason.count("sha256:") == 2 and '"n":2' in letter.body
    assert [m.message_id for m in settlement.delete_after_sends] == ["m2"]
    assert value(metrics, "ingest_records_conflicting_total", collection="events") == 1


def test_with_ignore_nothing_is_checked() -> None:
    metrics, settlement, _ = _conflicting(ConflictPolicy.IGNORE)
    assert not settlement.dead_letters
    assert value(metrics, "ingest_records_conflicting_total", collection="events") == 0
    assert value(metrics, "ingest_records_duplicate_total") == 2


def test_conflict_lines_are_throttled_and_say_how_many_were_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = Throttled(logging.getLogger("t.throttle"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.throttle"):
        for n in range(5):
            throttled.warning(f"line {n}")
        now[0] = 11.0
        throttled.warning("line 5")
    assert [r.getMessage() for r in caplog.records] == [
        "line 0",
        "line 5 (4 more like it in the last 10s)",
    ]


# ------------------------------------------------------------------ settings


def test_the_settings_of_both_features_are_typed_and_checked() -> None:
    s = Settings.from_env(
        {
            "INGEST_WRITE_MODE": "merge",
            "INGEST_VERSION_FIELD": "rev",
            "INGEST_ON_CONFLICT": "dead-letter",
        }
    )
    assert (s.version_field, s.on_conflict) == ("rev", ConflictPolicy.DEAD_LETTER)
    assert Settings().on_conflict is ConflictPolicy.COUNT and Settings().version_field is None
    mistakes = {
        "--version-field needs --write-mode replace or merge": {"version_field": "v"},
        "--version-field=a.b: 'a.b' must be a top-level field": {
            "version_field": "a.b", "write_mode": "replace"},
        "--version-field=_id: '_id' cannot be used": {"version_field": "_id", "write_mode": "merge"},
        "--on-conflict=drop: must be one of ignore, count, dead-letter": {"on_conflict": "drop"},
    }  # fmt: skip
    for expected, flags in mistakes.items():
        with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
            Settings.from_env({}, **flags)


def _ingest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    return subprocess.run([str(INGEST), *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_version_field_with_insert_once_is_one_line_and_exit_2() -> None:
    done = _ingest("run", "--queue-url", "http://127.0.0.1:1/q", "--version-field", "v")
    assert done.returncode == 2
    assert done.stderr == (
        "ingest: --version-field needs --write-mode replace or merge (insert-once never overwrites)\n"
    )


def test_the_conflict_check_keeps_to_its_share_of_the_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ingest.sinks.mongo_guards import CheckBudget

    now = [100.0]
    budget = CheckBudget(0.1, clock=lambda: now[0])
    assert budget.allows(5)  # the first check always runs
    budget.spent(0.002)  # an indexed lookup: the next bulk may check at once
    now[0] += 0.02
    assert budget.allows(5)
    budget.spent(6.0)  # a scan of the whole collection (FerretDB 1.24)
    now[0] += 6.0
    with caplog.at_level("WARNING"):
        assert not budget.allows(40)  # 54 s must pass first: 6 s is 10% of 60 s
        now[0] += 47.9
        assert not budget.allows(40)
    assert len(caplog.records) == 1  # rate-limited: one line a minute
    assert "conflict check skipped for 40 duplicates" in caplog.records[0].getMessage()
    now[0] += 0.2
    assert budget.allows(40)


@pytest.mark.parametrize(
    ("policy", "share"),
    [
        (ConflictPolicy.COUNT, 0.1),
        (ConflictPolicy.DEAD_LETTER, None),
        (ConflictPolicy.IGNORE, None),
    ],
)
def test_only_counting_is_kept_to_a_share_of_the_time(
    policy: ConflictPolicy, share: float | None
) -> None:
    # Who asked for conflicts in the dead-letter queue gets every bulk checked.
    from ingest.cli.connect import store
    from ingest.settings import Settings

    sink = store(Settings(on_conflict=policy))  # no network until its first use
    budget = sink._check_budget
    assert (budget.share if budget is not None else None) == share
    assert sink._check_conflicts is (policy is not ConflictPolicy.IGNORE)
