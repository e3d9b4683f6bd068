"""Acknowledge stage (ingest/pipeline/ack.py): a settlement carried out against the
queues as SQS answers it. Dead letters and resends go first, and only a message whose
dead letters and resends were all taken is deleted; any other comes back. A failed
delete is counted and the message comes back too. Messages let go are no longer held,
so the heartbeat stops extending them; released ones are let go before they turn
visible. On the in-memory queue, scripted to refuse or fail."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from ingest.errors import QueueUnavailable
from ingest.flow.retry import RetryPolicy
from ingest.metrics import Metrics
from ingest.payloads import MemoryPayloads
from ingest.pipeline.ack import Acknowledger, AckStage
from ingest.pipeline.channels import Outbox
from ingest.pipeline.claims import PayloadCleanup
from ingest.pipeline.heartbeat import VisibilityHeartbeat
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.messages import Settlement
from ingest.queues.base import REASON_ATTRIBUTE, DeadLetter, Message, Resend, resend_attributes
from ingest.queues.memory import MemoryQueue
from producer import wire

NO_DELAY = RetryPolicy(0, 0, 0)


class ScriptedQueue(MemoryQueue):
    """A memory queue whose calls can refuse every entry (`refuse`) or fail whole
    (`fail`, as SQS not answering does), and that notes what was held at each
    visibility change."""

    refuse: frozenset[str] = frozenset()
    fail: frozenset[str] = frozenset()
    bugs: dict[str, list[Exception]]  # raised once each, as a bug in a queue call would
    inflight: InFlight | None = None
    held_at_visibility_change: list[set[str]]

    def _scripted(self, call: str, entries: Sequence[object]) -> list[object] | None:
        if self.bugs.get(call):
            raise self.bugs[call].pop(0)
        if call in self.fail:
            raise QueueUnavailable(f"SQS {call}: no answer")
        return list(entries) if call in self.refuse else None

    def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        scripted = self._scripted("dead_letter", letters)
        return super().dead_letter(letters) if scripted is None else scripted  # type: ignore[return-value]

    def resend(self, resends: Sequence[Resend]) -> list[Resend]:
        scripted = self._scripted("resend", resends)
        return super().resend(resends) if scripted is None else scripted  # type: ignore[return-value]

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        scripted = self._scripted("delete", messages)
        return super().delete(messages) if scripted is None else scripted  # type: ignore[return-value]

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]:
        if self.inflight is not None:
            held = {m.message_id for m in self.inflight.all()}
            self.held_at_visibility_change.append(held & {m.message_id for m, _ in entries})
        return super().change_visibility(entries)


class Setup:
    """A source queue with its dead-letter queue, received messages held in flight,
    and the acknowledger for them."""

    def __init__(self, *bodies: str, payloads: MemoryPayloads | None = None) -> None:
        self.dead = MemoryQueue(url="memory://dlq")
        self.queue = ScriptedQueue(url="memory://q", dead_letter_queue=self.dead)
        self.queue.held_at_visibility_change = []
        self.queue.bugs = {}
        self.inflight = InFlight()
        self.queue.inflight = self.inflight
        self.metrics = Metrics()
        cleanup = PayloadCleanup(payloads, self.metrics) if payloads is not None else None
        self.ack = Acknowledger(
            {self.queue.url: self.queue}, self.inflight, self.metrics, NO_DELAY, cleanup
        )
        for body in bodies:
            self.queue.send(body)
        self.received = self.queue.receive(10, 0, 30)
        fresh, _ = self.inflight.admit(self.received)
        assert len(fresh) == len(bodies)

    def message(self, body: str) -> Message:
        (found,) = [m for m in self.received if m.body == body]
        return found

    def held(self) -> set[str]:
        return {m.body for m in self.inflight.all()}

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def letter(message: Message, reason: str = "not valid JSON") -> DeadLetter:
    return DeadLetter(message, message.body, reason, message.attributes)


def resend(message: Message) -> Resend:
    return Resend(message, message.body, resend_attributes({}, 1))


def test_dead_letters_and_resends_go_first_then_the_deletes_they_allow() -> None:
    s = Setup("plain", "poison", "again")
    plain, poison, again = (s.message(b) for b in ("plain", "poison", "again"))
    s.ack.apply(Settlement(delete=[plain], dead_letters=[letter(poison)], resends=[resend(again)],
                           delete_after_sends=[poison, again]))  # fmt: skip
    (letter_sent,) = s.dead._messages.values()
    assert letter_sent.body == "poison"
    assert wire.attribute_value(letter_sent.attributes, REASON_ATTRIBUTE) == "not valid JSON"
    (resent,) = s.queue._messages.values()  # the three are gone; the resend is new
    assert resent.body == "again" and resent.message_id != again.message_id
    assert s.held() == set() and s.count("ingest_in_flight_messages") == 0
    assert s.count("ingest_messages_deleted_total") == 3
    assert s.count("ingest_records_dead_lettered_total", reason="not valid JSON") == 1
    assert s.count("ingest_messages_requeued_total") == 1


@pytest.mark.parametrize("call", ["dead_letter", "resend"])
@pytest.mark.parametrize("how", ["refused", "failed"])
def test_a_message_whose_dead_letter_or_resend_was_not_taken_is_not_deleted_and_comes_back(
    call: str, how: str
) -> None:
    s = Setup("plain", "source")
    plain, source = s.message("plain"), s.message("source")
    if how == "refused":
        s.queue.refuse = frozenset({call})
    else:
        s.queue.fail = frozenset({call})
    sent = (
        {"dead_letters": [letter(source)]}
        if call == "dead_letter"
        else {"resends": [resend(source)]}
    )
    s.ack.apply(Settlement(delete=[plain], delete_after_sends=[source], **sent))  # type: ignore[arg-type]
    # Never deleted before what goes in its place is safe: it is tried again instead.
    assert [m.body for m in s.queue._messages.values()] == ["source"]
    assert s.held() == set()  # no longer held: the heartbeat must not keep it invisible
    (back,) = s.queue.receive(10, 0, 30)  # visible again after the retry delay (0 here)
    assert back.message_id == source.message_id and back.receive_count == 2
    assert len(s.dead) == 0
    assert s.count("ingest_messages_deleted_total") == 1  # its neighbour only
    assert s.count("ingest_records_dead_lettered_total", reason="not valid JSON") == 0
    assert s.count("ingest_messages_requeued_total") == 0


@pytest.mark.parametrize("how", ["stale handle", "failed"])
def test_a_failed_delete_is_counted_and_the_message_comes_back(how: str) -> None:
    payloads = MemoryPayloads()
    pointer = wire.PayloadPointer("payloads", "k")
    payloads.put(pointer, b"...")
    attributes = wire.pointer_attributes(wire.message_attributes(wire.ZSTD, 1, "2"), 3)
    s = Setup(payloads=payloads)
    s.queue.send(wire.pointer_body(pointer), attributes)
    (message,) = s.queue.receive(10, 0, 30)
    s.inflight.admit([message])
    if how == "stale handle":  # SQS delivered it again meanwhile, to someone else
        s.queue.change_visibility([(message, 0)])
        assert s.queue.receive(10, 0, 30)
    else:
        s.queue.fail = frozenset({"delete"})
    s.ack.apply(Settlement(delete=[message]))
    assert len(s.queue) == 1  # it comes back, and its records collapse as duplicates
    assert s.count("ingest_delete_failures_total") == 1
    assert s.count("ingest_messages_deleted_total") == 0
    # Its payload is kept: the redelivery needs it.
    assert payloads.deleted == [] and s.count("ingest_payloads_deleted_total") == 0


def test_a_deleted_pointer_message_has_its_payload_deleted_after_it() -> None:
    payloads = MemoryPayloads()
    pointer = wire.PayloadPointer("payloads", "k")
    payloads.put(pointer, b"...")
    attributes = wire.pointer_attributes(wire.message_attributes(wire.ZSTD, 1, "2"), 3)
    s = Setup(payloads=payloads)
    s.queue.send(wire.pointer_body(pointer), attributes)
    (message,) = s.queue.receive(10, 0, 30)
    s.ack.apply(Settlement(delete=[message]))
    assert len(s.queue) == 0 and payloads.deleted == [pointer]


def test_released_messages_are_let_go_before_they_turn_visible_and_retries_wait() -> None:
    s = Setup("released", "retried")
    released, retried = s.message("released"), s.message("retried")
    s.ack.apply(Settlement(release=[released], retry=[(retried, 600)]))
    # A poller receiving them at once must not take them for redeliveries of held ones.
    assert s.queue.held_at_visibility_change == [set(), set()]
    assert s.held() == set() and s.count("ingest_messages_released_total") == 1
    (back,) = s.queue.receive(10, 0, 30)  # the released one at once; the retried one later
    assert back.message_id == released.message_id
    assert s.queue.depth().in_flight == 2 and len(s.queue) == 2


def test_let_go_removes_held_messages_so_the_heartbeat_stops_extending_them() -> None:
    s = Setup("a", "b")
    heartbeat = VisibilityHeartbeat({s.queue.url: s.queue}, s.inflight, 30, s.metrics)
    for message in s.received:
        message.visible_until = time.monotonic()  # about to turn visible
    heartbeat.beat()
    assert s.count("ingest_visibility_extended_total") == 2
    s.ack.let_go(Settlement(delete=[s.message("a")], retry=[(s.message("b"), 0)]))
    assert s.held() == set() and s.count("ingest_in_flight_messages") == 0
    for message in s.received:
        message.visible_until = time.monotonic()
    heartbeat.beat()
    assert s.count("ingest_visibility_extended_total") == 2  # nothing extended since
    assert len(s.queue) == 2  # not deleted: they come back when their visibility runs out


@pytest.mark.timeout(60)
def test_an_acker_whose_settlement_fails_lets_it_go_reports_and_goes_on() -> None:
    s = Setup("first", "second")
    s.queue.bugs["delete"] = [RuntimeError("a bug")]
    outbox = Outbox()
    stage = AckStage(outbox, s.ack, ackers=1)
    stage.start()
    outbox.put(Settlement(delete=[s.message("first")]))
    outbox.put(Settlement(delete=[s.message("second")]))
    stage.stop()  # after the settlements already in the outbox
    stage.join(time.monotonic() + 30)
    assert [m.body for m in s.queue._messages.values()] == ["first"]  # comes back later
    assert s.held() == set()
    assert s.count("ingest_internal_errors_total", stage="acknowledge") == 1
    assert s.count("ingest_messages_deleted_total") == 1


def test_dead_letter_reasons_are_counted_under_their_first_words() -> None:
    s = Setup("x", "y")
    reasons = ["line 12: not valid JSON at position 345", "line 3: not valid JSON at position 7"]
    letters = [letter(s.message(b), r) for b, r in zip(("x", "y"), reasons, strict=True)]
    s.ack.apply(Settlement(dead_letters=letters, delete_after_sends=s.received))
    assert s.count("ingest_records_dead_lettered_total", reason="not valid JSON at") == 2
