"""The consumer's guarantees on the real servers (ElasticMQ and FerretDB)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from bson import ObjectId

from ingest.cli.options import service_options
from ingest.pipeline.service import Service
from ingest.queues.base import Message
from ingest.queues.sqs import SqsQueue
from ingest.settings import Settings
from ingest.sinks.base import Outcome, OutcomeKind, WriteMode, retry
from ingest.sinks.mongo import MongoSink
from producer import wire
from tests.support.queues import QueuePair
from tests.support.waiting import wait_until


def settings(*urls: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        queue_urls=urls, wait_seconds=1, metrics_port=0, exit_when_idle=2.0, max_pollers=0
    )
    return Settings(**{**base, **overrides})


def send_records(
    client: Any, url: str, documents: Sequence[dict[str, Any]], per_message: int = 10, **extra: Any
) -> None:
    lines = [wire.encode_record("events", d) for d in documents]
    entries = []
    for start in range(0, len(lines), per_message):
        chunk = lines[start : start + per_message]
        entries.append(
            {
                "Id": str(len(entries)),
                "MessageBody": "\n".join(chunk),
                "MessageAttributes": wire.message_attributes(wire.IDENTITY, len(chunk)),
                **extra,
            }
        )
        if len(entries) == 10:
            client.send_message_batch(QueueUrl=url, Entries=entries)
            entries = []
    if entries:
        client.send_message_batch(QueueUrl=url, Entries=entries)


def run_until_idle(service: Service, timeout: float = 60) -> float:
    started = time.monotonic()
    service.start()
    assert service.wait(timeout), "consumer did not drain in time"
    service.stop()
    return time.monotonic() - started


class SlowSink(MongoSink):
    """The real MongoDB sink, made slower than the visibility timeout."""

    delay = 0.0

    def write(self, records: Sequence[wire.Record]) -> list[Outcome]:
        time.sleep(self.delay)  # the fault: a write slower than the visibility timeout
        return super().write(records)


def test_a_write_slower_than_the_visibility_timeout_is_not_delivered_twice(
    make_queue: Callable[..., QueuePair], sqs_client: Any, mongo_db: Any
) -> None:
    pair = make_queue(visibility_timeout=3)
    documents = [{"_id": ObjectId(), "n": n} for n in range(200)]
    send_records(sqs_client, pair.url, documents)
    sink = SlowSink(mongo_db)
    sink.delay = 5.0  # longer than the 3 s visibility: only the heartbeat keeps them hidden
    queue = SqsQueue(pair.url, sqs_client, pair.dead_letter_url)
    s = settings(pair.url, visibility_timeout=3, writers=2, pollers=1)
    service = Service(service_options(s), {pair.url: queue}, sink)
    run_until_idle(service, timeout=120)
    assert mongo_db.events.count_documents({}) == 200
    assert service.metrics.messages_received._value.get() == 20  # each message received once
    assert service.metrics.duplicate_deliveries._value.get() == 0
    assert service.metrics.records_duplicate._value.get() == 0
    assert service.metrics.visibility_extended._value.get() > 0


def test_an_empty_queue_does_not_slow_a_full_one(
    make_queue: Callable[..., QueuePair], sqs_client: Any, mongo_db: Any
) -> None:
    full, empty = make_queue(), make_queue()
    send_records(
        sqs_client, full.url, [{"_id": ObjectId(), "n": n} for n in range(3000)], per_message=30
    )
    counted = {url: CountingQueue(url, sqs_client, pair.dead_letter_url)
               for url, pair in ((full.url, full), (empty.url, empty))}  # fmt: skip
    # 20 s long polls: a consumer that polled the queues in turn would have a receive
    # from the empty queue return (after its 20 s) between any two from the full one.
    service = Service(
        service_options(settings(full.url, empty.url, wait_seconds=20, exit_when_idle=None)),
        dict(counted),
        MongoSink(mongo_db),
    )
    service.start()
    try:
        assert wait_until(lambda: mongo_db.events.count_documents({}) >= 3000, 40, 0.2)
        from_full, from_empty = counted[full.url].returned, counted[empty.url].returned
    finally:
        service.stop(deadline_seconds=25)
    assert mongo_db.events.count_documents({}) == 3000
    # 100 messages take 10 receives or more; the empty queue's two pollers return once
    # a 20 s long poll each: at most twice each in the 40 s a slow drain may take.
    assert from_empty < from_full // 2, (from_empty, from_full)


class CountingQueue(SqsQueue):
    """The real queue, counting its receives that returned (its pollers share it)."""

    returned = 0
    _counting = threading.Lock()

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]:
        messages = super().receive(max_messages, wait_seconds, visibility_timeout)
        with self._counting:
            self.returned += 1
        return messages


class FlakyOnce(MongoSink):
    """Real MongoDB; the first write of some records reports a transient error. It keeps
    the order in which versions were stored per group (the records of each ordered bulk
    the server took), and what the server holds after each bulk."""

    def __init__(self, db: Any, flaky: set[int]) -> None:
        super().__init__(db, WriteMode.REPLACE)
        self.db = db
        self.flaky = flaky
        self.applied: dict[str, list[int]] = {}  # group -> versions, in the order stored
        self.misread: list[tuple[str, int, int]] = []  # (group, last stored, what is held)

    def write_ordered(self, records: Sequence[wire.Record]) -> list[Outcome]:
        for index, record in enumerate(records):
            if record.document["v"] in self.flaky:
                self.flaky.discard(record.document["v"])
                done = self._observed(records[:index]) if index else []
                return done + [retry("injected write conflict")] * (len(records) - index)
        return self._observed(records)

    def _observed(self, records: Sequence[wire.Record]) -> list[Outcome]:
        outcomes = super().write_ordered(records)
        last: dict[str, tuple[Any, int]] = {}
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome.kind is OutcomeKind.WRITTEN:
                group, v = record.document["g"], record.document["v"]
                self.applied.setdefault(group, []).append(v)
                last[group] = (record.document["_id"], v)
        for group, (oid, v) in last.items():  # the server holds the bulk's last version
            held = self.db.events.find_one({"_id": oid})["v"]
            if held != v:
                self.misread.append((group, v, held))
        return outcomes


def test_fifo_order_per_group_holds_in_replace_mode_under_retries(
    make_queue: Callable[..., QueuePair], sqs_client: Any, mongo_db: Any
) -> None:
    pair = make_queue(fifo=True, visibility_timeout=5)
    ids = {group: ObjectId() for group in ("a", "b", "c")}
    for v in range(1, 16):  # each group: versions 1..15 of one document, in order
        for group, oid in ids.items():
            sqs_client.send_message(
                QueueUrl=pair.url, MessageBody=wire.encode_record("events", {"_id": oid, "v": v, "g": group}),
                MessageGroupId=group, MessageDeduplicationId=f"{group}-{v}",
            )  # fmt: skip
    sink = FlakyOnce(mongo_db, flaky={3, 7, 12})
    queue = SqsQueue(pair.url, sqs_client, pair.dead_letter_url)
    s = settings(
        pair.url, write_mode=WriteMode.REPLACE, retry_base_seconds=0.5, retry_max_seconds=1
    )
    run_until_idle(Service(service_options(s), {pair.url: queue}, sink), timeout=90)
    # Every version stored once, in the order sent, and the server held each bulk's last.
    assert sink.applied == {group: list(range(1, 16)) for group in ids}
    assert sink.misread == []
    for group, oid in ids.items():
        assert mongo_db.events.find_one({"_id": oid})["v"] == 15, group
    assert not sink.flaky  # every injected failure happened and was retried
