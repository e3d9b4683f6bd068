"""Receive stage (ingest/pipeline/receive.py): a poller receives, admits what it does not
hold yet, hands it on through the inbox; measures how long each message waited in SQS;
pauses while the breaker is open; lives on through failed receives."""

from __future__ import annotations

import threading
import time

import pytest

from ingest.errors import QueueUnavailable
from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.receive import Poller, ReceiveOptions, ReceiveStage, Wiring
from ingest.queues.base import Message
from ingest.queues.memory import MemoryQueue
from tests.support.waiting import wait_until


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def wiring(metrics: Metrics | None = None, **overrides: object) -> Wiring:
    parts: dict[str, object] = {
        "inbox": Inbox(4), "outbox": Outbox(), "inflight": InFlight(), "breaker": SinkBreaker(),
        "metrics": metrics or Metrics(), "options": ReceiveOptions(wait_seconds=0),
    }  # fmt: skip
    return Wiring(**{**parts, **overrides})  # type: ignore[arg-type]


# --------------------------------------------------------------- queue wait


def test_the_queue_wait_is_measured_from_sqs_send_time_at_receive() -> None:
    queue = MemoryQueue("memory://q")
    for n in range(3):
        queue.send(f"m{n}")
    sent = max(m.sent_at for m in queue._messages.values())
    metrics = Metrics()
    assert Poller(queue, wiring(metrics, clock=lambda: sent + 42.0), "p").poll_once() == 3
    assert sample(metrics, "ingest_queue_wait_seconds_count") == 3
    assert 3 * 42.0 <= sample(metrics, "ingest_queue_wait_seconds_sum") <= 3 * 42.1
    assert sample(metrics, "ingest_queue_wait_seconds_bucket", le="30.0") == 0
    assert sample(metrics, "ingest_queue_wait_seconds_bucket", le="60.0") == 3


def test_a_consumer_clock_behind_sqs_counts_zero_not_negative() -> None:
    queue = MemoryQueue("memory://q")
    queue.send("m")
    metrics = Metrics()
    Poller(queue, wiring(metrics, clock=lambda: 0.0), "p").poll_once()
    assert sample(metrics, "ingest_queue_wait_seconds_count") == 1
    assert sample(metrics, "ingest_queue_wait_seconds_sum") == 0.0


# --------------------------------------------------------------- one receive


@pytest.mark.timeout(30)  # an outbox.get() that finds nothing would block
def test_a_receive_is_held_and_handed_on_and_a_redelivery_of_a_held_message_is_not() -> None:
    queue = MemoryQueue("memory://q")
    queue.send("a")
    queue.send("b")
    metrics = Metrics()
    w = wiring(metrics)
    poller = Poller(queue, w, "p")
    assert poller.poll_once() == 2
    handed = w.inbox.get(0, timeout=0)
    assert [m.body for m in handed] == ["a", "b"] and len(w.inflight) == 2
    # Still held (being written) when SQS delivers "a" again: dropped, newer handle kept.
    queue.change_visibility([(handed[0], 0)])
    assert poller.poll_once() == 0
    assert w.inbox.empty() and len(w.inflight) == 2
    (held,) = [m for m in w.inflight.all() if m.body == "a"]
    assert held.receive_count == 2 and queue.delete([held]) == []  # the newer handle works
    assert sample(metrics, "ingest_messages_received_total") == 3
    assert sample(metrics, "ingest_duplicate_deliveries_total") == 1


@pytest.mark.timeout(30)  # an outbox.get() that finds nothing would block
def test_a_batch_that_cannot_be_handed_on_is_handed_back_and_the_failure_raised() -> None:
    queue = MemoryQueue("memory://q")
    queue.send("a")

    class Broken(Inbox):
        def put(self, messages, stopping, waiting):  # type: ignore[no-untyped-def]
            raise RuntimeError("a bug")

    w = wiring(inbox=Broken(4))
    with pytest.raises(RuntimeError):
        Poller(queue, w, "p").poll_once()
    handed_back = w.outbox.get()
    assert handed_back is not None and [m.body for m in handed_back.release] == ["a"]


@pytest.mark.timeout(30)  # an outbox.get() that finds nothing would block
def test_a_poller_stopping_hands_back_what_it_could_not_place() -> None:
    queue = MemoryQueue("memory://q")
    queue.send("late")
    w = wiring(inbox=Inbox(1))
    assert w.inbox.put([Message("q", "first", "r", "")], threading.Event(), lambda: None) == []
    poller = Poller(queue, w, "p")
    poller.stopping.set()  # shutting down while the inbox is full
    assert poller.poll_once() == 1
    handed_back = w.outbox.get()
    assert handed_back is not None and [m.body for m in handed_back.release] == ["late"]


# --------------------------------------------------------------- the loop


@pytest.mark.timeout(60)
def test_pollers_do_not_receive_while_the_breaker_is_open() -> None:
    queue = MemoryQueue("memory://q")
    queue.send("waiting")
    breaker = SinkBreaker()
    breaker.record_failure("MongoDB down")
    w = wiring(breaker=breaker)
    poller = Poller(queue, w, "p")
    beats: list[float] = [poller.last_beat]
    poller.start()
    try:
        # The loop goes round (its wait on the breaker) three times: paused, not stuck.
        def went_round() -> bool:
            if poller.last_beat != beats[-1]:
                beats.append(poller.last_beat)
            return len(beats) > 3

        assert wait_until(went_round)
        assert queue.receive_calls == 0 and w.inbox.empty()
        breaker.record_success()
        assert wait_until(lambda: not w.inbox.empty())
    finally:
        poller.stopping.set()
        poller.thread.join(10)
    assert not poller.thread.is_alive()


@pytest.mark.timeout(60)
def test_a_failed_receive_is_counted_shown_and_tried_again() -> None:
    failures = [QueueUnavailable("SQS ReceiveMessage: no answer"), RuntimeError("a bug")]

    class Flaky(MemoryQueue):
        def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int):  # type: ignore[no-untyped-def]
            if failures:
                raise failures.pop(0)
            return super().receive(max_messages, wait_seconds, visibility_timeout)

    queue = Flaky("memory://q")
    queue.send("after")
    metrics = Metrics()
    w = wiring(metrics)
    stage = ReceiveStage({queue.url: queue}, w, 1)
    (poller,) = stage.pollers
    errors: list[list[str]] = []
    stage.start()
    try:
        assert wait_until(lambda: errors.append(stage.receive_errors()) or not w.inbox.empty())
    finally:
        stage.stop()
        stage.join(time.monotonic() + 10)
    shown = [e for seen in errors for e in seen]
    assert "SQS ReceiveMessage: no answer" in shown
    assert "internal error in the receive stage (RuntimeError)" in shown
    assert stage.receive_errors() == [] and poller.last_error is None  # cleared by a success
    assert sample(metrics, "ingest_receive_errors_total") == 2
    assert sample(metrics, "ingest_internal_errors_total", stage="receive") == 1


def test_a_running_poller_whose_loop_has_not_gone_round_is_stalled() -> None:
    queue = MemoryQueue("memory://q")
    stage = ReceiveStage({queue.url: queue}, wiring(), 2)
    first, second = stage.pollers
    first.last_beat = time.monotonic() - 100
    assert stage.stalled(bound=50) == [first]
    first.stopping.set()  # a poller that was told to stop is no longer judged
    assert stage.stalled(bound=50) == [] and stage.running() == [second]
