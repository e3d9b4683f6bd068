"""The same behaviour from the in-memory queue and from SQS (ElasticMQ)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from ingest.queues.base import REASON_ATTRIBUTE, DeadLetter, MessageQueue
from ingest.queues.memory import MemoryQueue
from ingest.queues.sqs import SqsQueue
from producer import wire
from tests.conftest import QueuePair

Pair = tuple[MessageQueue, MessageQueue]  # (queue, its dead-letter queue)


@pytest.fixture(params=["memory", "sqs"])
def queues(request: pytest.FixtureRequest) -> Pair:
    if request.param == "memory":
        dead = MemoryQueue(url="memory://dlq")
        return MemoryQueue(url="memory://q", dead_letter_queue=dead), dead
    make_queue: Callable[..., QueuePair] = request.getfixturevalue("make_queue")
    client: Any = request.getfixturevalue("sqs_client")
    pair = make_queue(visibility_timeout=30)
    return SqsQueue(pair.url, client, pair.dead_letter_url), SqsQueue(pair.dead_letter_url, client)


def receive_all(queue: MessageQueue, expected: int, visibility: int = 30) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while len(got) < expected and time.monotonic() < deadline:
        got += queue.receive(10, 1, visibility)
    return got


def test_sent_messages_are_received_with_attributes(queues: Pair) -> None:
    queue, _ = queues
    attributes = wire.message_attributes(wire.IDENTITY, 1)
    sent = {queue.send(f"body-{i}", attributes) for i in range(3)}
    got = receive_all(queue, 3)
    assert {m.message_id for m in got} == sent
    assert {m.body for m in got} == {"body-0", "body-1", "body-2"}
    assert all(wire.attribute_value(m.attributes, wire.FORMAT_ATTRIBUTE) == "1" for m in got)
    assert all(m.receive_count == 1 for m in got)


def test_received_messages_are_invisible_until_released(queues: Pair) -> None:
    queue, _ = queues
    queue.send("only")
    first = receive_all(queue, 1)
    assert queue.receive(10, 0, 30) == []
    assert queue.change_visibility([(first[0], 0)]) == []
    again = receive_all(queue, 1)
    assert again[0].message_id == first[0].message_id
    assert again[0].receive_count == 2
    assert again[0].receipt_handle != first[0].receipt_handle


def test_deleted_messages_do_not_come_back(queues: Pair) -> None:
    queue, _ = queues
    for i in range(12):
        queue.send(f"m{i}")
    got = receive_all(queue, 12, visibility=1)
    assert queue.delete(got) == []
    time.sleep(1.2)
    assert queue.receive(10, 0, 30) == []


def test_dead_letters_carry_the_reason_and_format(queues: Pair) -> None:
    queue, dead = queues
    queue.send("bad", wire.message_attributes(wire.GZIP, 1))
    source = receive_all(queue, 1)[0]
    letter = DeadLetter(source, source.body, "not valid gzip", source.attributes)
    assert queue.dead_letter([letter]) == []
    got = receive_all(dead, 1)
    assert got[0].body == "bad"
    assert wire.attribute_value(got[0].attributes, REASON_ATTRIBUTE) == "not valid gzip"
    assert wire.attribute_value(got[0].attributes, wire.ENCODING_ATTRIBUTE) == wire.GZIP


def test_dead_letter_depth_counts_the_dead_letter_queue(queues: Pair) -> None:
    queue, dead = queues
    assert queue.dead_letter_depth() == type(queue.depth())(0, 0, 0)
    for n in range(3):
        dead.send(f"dead-{n}")
    receive_all(dead, 1)  # one held: in flight still counts
    depth = queue.dead_letter_depth()
    assert depth is not None and depth.visible + depth.in_flight == 3
    assert depth.in_flight >= 1
    assert dead.dead_letter_depth() is None  # the dead-letter queue has none of its own


def test_depth_counts_visible_and_in_flight(queues: Pair) -> None:
    queue, _ = queues
    for i in range(3):
        queue.send(f"d{i}")
    receive_all(queue, 1)[:1]
    deadline = time.monotonic() + 5
    depth = queue.depth()
    while depth.visible + depth.in_flight != 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # SQS's counts are approximate and lag a little
        depth = queue.depth()
    assert depth.visible + depth.in_flight == 3
    assert depth.in_flight >= 1


def test_requeue_sends_a_fresh_copy_and_deletes_the_original(queues: Pair) -> None:
    queue, dead = queues
    attributes = wire.message_attributes(wire.IDENTITY, 1)
    queue.send("again", attributes)
    first = receive_all(queue, 1)
    assert queue.requeue(first) == []
    again = receive_all(queue, 1)
    assert [m.body for m in again] == ["again"] and again[0].receive_count == 1
    assert again[0].message_id != first[0].message_id
    assert wire.attribute_value(again[0].attributes, wire.FORMAT_ATTRIBUTE) == "1"
    assert queue.delete(again) == []
    assert queue.receive(10, 0, 30) == [] and dead.receive(10, 0, 30) == []
