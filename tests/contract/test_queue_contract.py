"""The same behaviour from the in-memory queue and from SQS (ElasticMQ)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ingest.queues.base import (
    REASON_ATTRIBUTE,
    DeadLetter,
    MessageQueue,
    Outgoing,
    QueueService,
    Resend,
    resend_attributes,
)
from ingest.queues.memory import MemoryService
from ingest.queues.sqs import SqsService
from producer import wire
from tests.support.waiting import wait_until

Pair = tuple[MessageQueue, MessageQueue]  # (queue, its dead-letter queue)


@pytest.fixture(params=["memory", pytest.param("sqs", marks=pytest.mark.stack)])
def service(request: pytest.FixtureRequest) -> Iterator[QueueService]:
    """The queue service; queues it creates are deleted afterwards."""
    if request.param == "memory":
        yield MemoryService()
        return
    client: Any = request.getfixturevalue("sqs_client")
    created = SqsService(client)
    yield created
    for url in client.list_queues(QueueNamePrefix="contract-").get("QueueUrls", []):
        if url.rsplit("/", 1)[-1].startswith(_names):
            with contextlib.suppress(Exception):
                client.delete_queue(QueueUrl=url)


_names = f"contract-{uuid.uuid4().hex[:8]}"


def _create(service: QueueService, fifo: bool = False, max_receive_count: int = 5) -> Pair:
    name = f"{_names}-{uuid.uuid4().hex[:6]}{'.fifo' * fifo}"
    queue = service.create(name, visibility_timeout=30, max_receive_count=max_receive_count)
    assert queue.dead_letter_url is not None
    return queue, service.queue(queue.dead_letter_url)


@pytest.fixture
def queues(service: QueueService) -> Pair:
    return _create(service)


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
    queue.send("kept")
    got = receive_all(queue, 13, visibility=1)
    (kept,) = [m for m in got if m.body == "kept"]
    assert queue.delete([m for m in got if m is not kept]) == []
    # Its second of invisibility starts after all the others': once it is back, any
    # deleted message that SQS had kept would be back too.
    assert queue.change_visibility([(kept, 1)]) == []
    again = receive_all(queue, 1)
    assert [m.body for m in again] == ["kept"]
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
    receive_all(queue, 1)

    # SQS's counts are approximate and lag a little.
    def counted() -> bool:
        depth = queue.depth()
        return depth.visible + depth.in_flight == 3 and depth.in_flight >= 1

    assert wait_until(counted)


def test_resend_sends_a_fresh_copy_with_its_attempts_and_deletes_nothing(queues: Pair) -> None:
    queue, dead = queues
    attributes = wire.message_attributes(wire.IDENTITY, 1)
    queue.send("again", attributes)
    first = receive_all(queue, 1)
    resend = Resend(first[0], "again", resend_attributes(attributes, 3))
    assert queue.resend([resend]) == []
    assert queue.delete(first) == []  # the caller deletes the source once it is resent
    again = receive_all(queue, 1)
    assert [m.body for m in again] == ["again"] and again[0].receive_count == 1
    assert again[0].message_id != first[0].message_id and again[0].attempts == 3
    assert wire.attribute_value(again[0].attributes, wire.FORMAT_ATTRIBUTE) == "1"
    assert queue.delete(again) == []
    assert queue.receive(10, 0, 30) == [] and dead.receive(10, 0, 30) == []


def test_a_resend_with_a_delay_is_not_received_before_it(queues: Pair) -> None:
    queue, _ = queues
    queue.send("later")
    (first,) = receive_all(queue, 1)
    assert queue.resend([Resend(first, "later", resend_attributes({}, 1), delay_seconds=2)]) == []
    assert queue.delete([first]) == []
    assert queue.receive(10, 0, 30) == []  # not yet visible
    (again,) = receive_all(queue, 1)
    assert again.body == "later" and again.attempts == 1


def test_a_created_queue_is_found_again_with_its_redrive_policy(service: QueueService) -> None:
    queue, dead = _create(service, max_receive_count=3)
    again = service.queue(queue.url)
    assert (again.dead_letter_url, again.max_receive_count) == (dead.url, 3)
    assert again.dead_letter_depth() == dead.depth()
    assert service.queue(dead.url).dead_letter_url is None  # a dead-letter queue has none


def test_messages_carry_the_queues_receive_limit_and_sqs_send_time(queues: Pair) -> None:
    queue, _ = queues
    before = time.time()
    queue.send("x")
    (message,) = receive_all(queue, 1)
    assert message.max_receive_count == 5 and not message.last_receive
    assert message.sent_at is not None and before - 5 <= message.sent_at <= time.time() + 5


def test_a_stale_receipt_handle_does_not_delete_the_message(queues: Pair) -> None:
    queue, _ = queues
    queue.send("twice")
    (first,) = receive_all(queue, 1)
    queue.change_visibility([(first, 0)])
    (second,) = receive_all(queue, 1)
    queue.delete([first])  # the handle of an earlier receive
    queue.change_visibility([(second, 0)])
    (third,) = receive_all(queue, 1)
    assert third.message_id == first.message_id and third.receive_count == 3


def test_batches_keep_attributes_and_report_what_failed(queues: Pair) -> None:
    queue, _ = queues
    attributes = wire.message_attributes(wire.GZIP, 3)
    assert queue.send_batch([Outgoing(f"b{n}", attributes) for n in range(23)]) == []
    got = receive_all(queue, 23)
    assert sorted(m.body for m in got) == sorted(f"b{n}" for n in range(23))
    assert {m.attribute(wire.ENCODING_ATTRIBUTE) for m in got} == {wire.GZIP}


def test_fifo_groups_are_kept(service: QueueService) -> None:
    queue, _ = _create(service, fifo=True)
    outgoing = [Outgoing(f"{g}{n}", {}, g, f"{g}{n}") for g in "ab" for n in range(3)]
    assert queue.send_batch(outgoing) == []
    got: list[Any] = []
    deadline = time.monotonic() + 10
    while len(got) < 6 and time.monotonic() < deadline:
        batch = queue.receive(10, 1, 30)
        got += batch
        queue.delete(batch)
    by_group: dict[str | None, list[str]] = {}
    for message in got:
        by_group.setdefault(message.group_id, []).append(message.body)
    assert by_group == {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}


def test_purge_empties_the_queue(queues: Pair) -> None:
    queue, _ = queues
    queue.send_batch([Outgoing(f"p{n}") for n in range(5)])
    queue.purge()
    assert wait_until(lambda: queue.depth().total == 0)  # up to a minute on AWS
    assert queue.receive(10, 0, 30) == []


def test_a_move_task_moves_every_dead_letter_back(service: QueueService) -> None:
    queue, dead = _create(service)
    dead.send_batch(
        [Outgoing(f"d{n}", wire.message_attributes(wire.IDENTITY, 1)) for n in range(4)]
    )
    handle = service.start_move(dead.url, queue.url)
    assert wait_until(lambda: service.move_status(dead.url, handle).status != "RUNNING")
    task = service.move_status(dead.url, handle)
    assert (task.status, task.moved) == ("COMPLETED", 4)
    assert sorted(m.body for m in receive_all(queue, 4)) == ["d0", "d1", "d2", "d3"]
