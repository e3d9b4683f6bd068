"""What flows between the stages (ingest/pipeline/messages.py): settlements that add up,
and know every message they are about."""

from __future__ import annotations

from ingest.pipeline.messages import Settlement
from ingest.queues.base import DeadLetter, Message, Resend


def message(mid: str) -> Message:
    return Message("memory://q", mid, "r", "body")


def test_a_settlement_extended_by_another_holds_both_and_names_every_message() -> None:
    a, b, c, d, e = (message(mid) for mid in "abcde")
    first = Settlement(delete=[a], dead_letters=[DeadLetter(b, "x", "why")],
                       delete_after_sends=[b], retry=[(c, 5)])  # fmt: skip
    second = Settlement(resends=[Resend(d, "y", {})], delete_after_sends=[d], release=[e])
    first.extend(second)
    assert [m.message_id for m in first.messages()] == ["a", "b", "d", "c", "e"]
    assert [r.source for r in first.resends] == [d] and len(first.dead_letters) == 1
    assert first.retry == [(c, 5)] and first.release == [e]
    assert Settlement().messages() == []
