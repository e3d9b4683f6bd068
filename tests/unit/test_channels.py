"""The hand-offs between stages (ingest/pipeline/channels.py): the inbox's lanes and its
bound, and the outbox that carries settlements (and hand-backs) to the ackers."""

from __future__ import annotations

import queue
import threading

import pytest

from ingest.pipeline.channels import Inbox, Outbox, partition_key
from ingest.pipeline.messages import Settlement
from ingest.queues.base import Message
from producer import wire
from producer.wire import PARTITION_ATTRIBUTE
from tests.support.waiting import wait_until


def keyed(n: int, key: str) -> Message:
    return Message("q", f"m{n}", "r", "", {PARTITION_ATTRIBUTE: {"StringValue": key}})


def test_partitioned_inbox_keeps_a_key_on_one_lane_in_order() -> None:
    inbox = Inbox(maxsize=100, lanes=4)
    stop = threading.Event()
    for n in range(40):
        assert inbox.put([keyed(n, f"user-{n % 5}")], stop, lambda: None) == []
    lanes: dict[str, set[int]] = {}
    order: dict[str, list[int]] = {}
    for lane in range(4):
        while True:
            try:
                batch = inbox.get(lane, timeout=0)
            except queue.Empty:
                break
            for m in batch:
                key = str(wire.attribute_value(m.attributes, PARTITION_ATTRIBUTE))
                lanes.setdefault(key, set()).add(lane)
                order.setdefault(key, []).append(int(m.message_id[1:]))
    assert inbox.empty() and sum(len(ids) for ids in order.values()) == 40
    assert all(len(used) == 1 for used in lanes.values()) and len(order) == 5
    assert all(ids == sorted(ids) for ids in order.values())


def test_the_partition_key_is_the_attribute_else_the_group_else_the_message() -> None:
    assert partition_key(keyed(1, "user-1")) == "user-1"
    assert partition_key(Message("q.fifo", "m", "r", "", group_id="g")) == "g"
    assert partition_key(Message("q", "m7", "r", "")) == "m7"


def test_inbox_hands_back_what_it_cannot_place_when_stopping() -> None:
    inbox = Inbox(maxsize=1)
    stop = threading.Event()
    first = [Message("q", "a", "r", "")]
    assert inbox.put(first, stop, lambda: None) == []
    stop.set()
    second = [Message("q", "b", "r", "")]
    assert inbox.put(second, stop, lambda: None) == second


@pytest.mark.timeout(30)
def test_a_full_inbox_blocks_the_poller_until_a_writer_takes_a_batch() -> None:
    """The back-pressure: `put` waits (saying so through `waiting`) while the lane is full."""
    inbox = Inbox(maxsize=1)
    stop = threading.Event()
    assert inbox.put([Message("q", "a", "r", "")], stop, lambda: None) == []
    assert inbox.full()
    waits: list[int] = []
    placed = threading.Event()

    def poller() -> None:
        assert inbox.put([Message("q", "b", "r", "")], stop, lambda: waits.append(1)) == []
        placed.set()

    threading.Thread(target=poller, daemon=True).start()
    assert wait_until(lambda: len(waits) >= 2)  # it went round while full, still waiting
    assert not placed.is_set()
    assert [m.message_id for m in inbox.get(0, timeout=1)] == ["a"]
    assert placed.wait(10)
    assert [m.message_id for m in inbox.drain()] == ["b"] and inbox.empty()


def test_get_on_an_empty_lane_raises_empty() -> None:
    with pytest.raises(queue.Empty):
        Inbox(maxsize=2).get(0, timeout=0)


@pytest.mark.timeout(30)  # an outbox.get() that finds nothing would block
def test_the_outbox_hands_messages_back_as_a_release_and_stops_each_acker() -> None:
    outbox = Outbox()
    held = [Message("q", "a", "r", ""), Message("q", "b", "r", "")]
    outbox.release([])  # nothing to hand back: nothing for the ackers
    outbox.release(held)
    outbox.put(Settlement(delete=held[:1]))
    outbox.close(2)
    released = outbox.get()
    assert released is not None and released.release == held and not released.delete
    deleted = outbox.get()
    assert deleted is not None and deleted.delete == held[:1]
    assert outbox.get() is None and outbox.get() is None
