"""Messages this process holds (ingest/pipeline/inflight.py): a redelivery of a held
message is dropped but its newer receipt handle kept; what turns visible soon is found
for the heartbeat."""

from __future__ import annotations

import time

from ingest.pipeline.inflight import InFlight
from ingest.queues.base import Message


def message(
    mid: str, handle: str = "r1", receive_count: int = 1, visible_in: float = 30
) -> Message:
    return Message("memory://q", mid, handle, "body", receive_count=receive_count,
                   visible_until=time.monotonic() + visible_in)  # fmt: skip


def test_a_redelivery_of_a_held_message_is_dropped_and_its_newer_handle_kept() -> None:
    held = InFlight()
    first = message("a")
    fresh, repeats = held.admit([first, message("b")])
    assert [m.message_id for m in fresh] == ["a", "b"] and repeats == 0
    again = message("a", handle="r2", receive_count=3, visible_in=60)
    fresh, repeats = held.admit([again, message("c")])
    assert [m.message_id for m in fresh] == ["c"] and repeats == 1
    assert len(held) == 3
    # SQS honours only the latest handle; the receive count moved on too.
    assert first.receipt_handle == "r2" and first.receive_count == 3
    assert first.visible_until == again.visible_until
    older = message("a", handle="r3", receive_count=2)
    held.admit([older])
    assert first.receive_count == 3  # never back


def test_removed_messages_are_no_longer_held_and_can_be_admitted_again() -> None:
    held = InFlight()
    a, b = message("a"), message("b")
    held.admit([a, b])
    held.remove([a, message("never-held")])
    assert held.all() == [b] and len(held) == 1
    fresh, _ = held.admit([message("a", handle="r9")])
    assert [m.receipt_handle for m in fresh] == ["r9"]


def test_expiring_finds_what_turns_visible_within_the_horizon() -> None:
    held = InFlight()
    soon, late = message("soon", visible_in=5), message("late", visible_in=500)
    held.admit([soon, late])
    assert held.expiring(within=15) == [soon]
    assert {m.message_id for m in held.expiring(within=1000)} == {"soon", "late"}
