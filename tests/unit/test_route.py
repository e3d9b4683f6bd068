"""Routing (ingest/pipeline/route.py): the allow-list and per-collection hooks, each
refusal about its own record only."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from ingest.errors import ConfigError
from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.route import Router, build_router
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import Message
from ingest.settings import Settings, parse_hooks
from ingest.sinks.memory import MemorySink
from producer import wire


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


def new_id(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "_id": "another"}


def test_a_hook_that_changes_the_id_refuses_the_record_and_an_open_router_passes_it() -> None:
    record = wire.decode_line(line("audit", n=1))
    refusal = Router(hooks={"audit": new_id}).route(record)
    assert not isinstance(refusal, wire.Record)
    assert refusal.reason == "hook for 'audit' must return a document with the same _id"
    assert Router().route(record) is record and Router().is_open
