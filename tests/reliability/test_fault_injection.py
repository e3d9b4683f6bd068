"""Failures nobody listed in advance, injected at seeded random points into a consumer
running on the real stack (ElasticMQ, FerretDB): the sink's driver raises exceptions of
every kind before or after it writes, and answers with replies it cannot read; the
queue raises before or after a call, and fails random entries of a batch. A few
records are poison: every write holding one raises.

Under that, every record ends written once or dead-lettered with a reason, within the
attempt bound, and the log shows at most one traceback per distinct failure a minute."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bson
from bson import ObjectId
from pymongo import MongoClient
from pymongo.errors import InvalidOperation, NetworkTimeout

from ingest.cli.options import service_options
from ingest.logs import _raised_at
from ingest.metrics import Metrics
from ingest.pipeline.service import Service
from ingest.queues import sqs
from ingest.queues.base import REASON_ATTRIBUTE, Message
from ingest.settings import Settings
from ingest.sinks.mongo import MongoSink
from producer import wire
from tests.support.harness import SEED, record_summary, scale, send_bodies, wait_until
from tests.support.queues import drain_queue

RECORDS = scale(10_000, 50_000)
POISON = 20
MAX_ATTEMPTS = 5
# SQS counts every receive, those whose answer a fault lost and those of messages whose
# delete failed; at these fault rates a count of 5 is reached without any record
# failing. The consumer's own bound is what is under test; SQS's is the backstop.
MAX_RECEIVE_COUNT = 50


class Injector:
    """Seeded decisions, counted by where they struck."""

    def __init__(self, seed: int, rate: float) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.rate = rate
        self.struck: Counter[str] = Counter()

    def strikes(self, where: str, rate: float | None = None) -> bool:
        with self._lock:
            hit = self._rng.random() < (self.rate if rate is None else rate)
            if hit:
                self.struck[where] += 1
            return hit

    def pick(self, items: Sequence[Any]) -> Any:
        with self._lock:
            return self._rng.choice(items)

    def subset(self, items: Sequence[Any]) -> list[Any]:
        with self._lock:
            return [item for item in items if self._rng.random() < 0.3]

    @property
    def total(self) -> int:
        return sum(self.struck.values())


# What a driver, a parser or our own code might raise on a bad day.
SURPRISES: list[Callable[[], Exception]] = [
    lambda: KeyError("nModified"),
    lambda: TypeError("'NoneType' object is not subscriptable"),
    lambda: RuntimeError("injected"),
    lambda: ValueError("injected"),
    lambda: AttributeError("'dict' object has no attribute 'inserted_ids'"),
    lambda: InvalidOperation("No operations to execute"),
    lambda: IndexError("list index out of range"),
]


class FaultyCollection:
    """A pymongo collection whose writes fail at random, before or after they happen.
    A failure after the write is what a reply the driver cannot read looks like."""

    def __init__(self, real: Any, injector: Injector, poison: set[Any]) -> None:
        self._real = real
        self._injector = injector
        self._poison = poison
        self.poison_writes: Counter[Any] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def bulk_write(self, ops: list[Any], **kwargs: Any) -> Any:
        ids = [getattr(op, "_doc", {}).get("_id") if hasattr(op, "_doc") else None for op in ops]
        ids += [getattr(op, "_filter", {}).get("_id") for op in ops if hasattr(op, "_filter")]
        return self._write("bulk", ids, lambda: self._real.bulk_write(ops, **kwargs))

    def insert_one(self, document: Any, **kwargs: Any) -> Any:
        return self._write("one", [document.get("_id")], lambda: self._real.insert_one(document))

    def _write(self, kind: str, ids: list[Any], call: Callable[[], Any]) -> Any:
        hit = [i for i in ids if i in self._poison]
        if hit:
            if len(ids) == 1:
                self.poison_writes[hit[0]] += 1
            raise KeyError("poison")
        injector = self._injector
        if injector.strikes(f"sink-{kind}-before"):
            raise injector.pick(SURPRISES)()
        if injector.strikes(f"sink-{kind}-timeout", injector.rate / 20):
            raise NetworkTimeout("injected: timed out")
        result = call()
        if injector.strikes(f"sink-{kind}-after"):
            raise injector.pick(SURPRISES[:2])()  # the reply could not be read
        return result


class FaultySink(MongoSink):
    def __init__(self, db: Any, injector: Injector, poison: set[Any]) -> None:
        super().__init__(db)
        self._faulty: dict[str, FaultyCollection] = {}
        self._injector, self._poison = injector, poison

    def _collection(self, name: str) -> Any:
        found = self._faulty.get(name)
        if found is None:
            found = FaultyCollection(super()._collection(name), self._injector, self._poison)
            self._faulty[name] = found
        return found

    def poison_writes(self) -> Counter[Any]:
        total: Counter[Any] = Counter()
        for collection in self._faulty.values():
            total.update(collection.poison_writes)
        return total


class FaultyQueue:
    """An SQS queue whose calls fail at random: before (nothing done), after (done, but
    the caller cannot know), or for some entries of a batch (those not done)."""

    def __init__(self, real: Any, injector: Injector) -> None:
        self._real = real
        self._injector = injector
        self.url = real.url
        self.dead_letter_url = real.dead_letter_url
        self.max_receive_count = real.max_receive_count
        self.receives: dict[str, list[Message]] = defaultdict(list)
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]:
        self._before("receive")
        got = self._real.receive(max_messages, wait_seconds, visibility_timeout)
        with self._lock:
            for message in got:
                for _id in _ids(message):
                    self.receives[_id].append(message)
        self._after("receive")  # received, then lost: back after the visibility timeout
        return got

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        return self._batch("delete", messages, self._real.delete)

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Any]:
        return self._batch("visibility", entries, self._real.change_visibility)

    def dead_letter(self, letters: Sequence[Any]) -> list[Any]:
        return self._batch("dead-letter", letters, self._real.dead_letter)

    def resend(self, resends: Sequence[Any]) -> list[Any]:
        return self._batch("resend", resends, self._real.resend)

    def _batch(
        self, where: str, items: Sequence[Any], call: Callable[[Any], list[Any]]
    ) -> list[Any]:
        self._before(where)
        failed: list[Any] = []
        if self._injector.strikes(f"queue-{where}-partial"):
            failed = self._injector.subset(items)
        done = [item for item in items if not any(item is f for f in failed)]
        result = call(done) if done else []
        self._after(where)
        return failed + list(result)

    def _before(self, where: str) -> None:
        if self._injector.strikes(f"queue-{where}-before"):
            raise self._injector.pick(SURPRISES)()

    def _after(self, where: str) -> None:
        if self._injector.strikes(f"queue-{where}-after"):
            raise self._injector.pick(SURPRISES)()


def _ids(message: Message) -> list[Any]:
    try:
        items = wire.decode_message(message.body, message.attributes)
    except wire.WireError:
        return []
    return [wire.record_id(i) for i in items if isinstance(i, wire.Record)]


class TracebackLog(logging.Handler):
    """Every traceback the consumer logs: when, and which failure (where it was raised)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[tuple[float, tuple[str, str, str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            key = (record.name, type(exc).__name__, _raised_at(exc))
            self.seen.append((record.created, key))

    def repeats_within(self, seconds: float) -> list[tuple[str, str, str]]:
        last: dict[tuple[str, str, str], float] = {}
        repeated = []
        for at, key in sorted(self.seen):
            if key in last and at - last[key] < seconds:
                repeated.append(key)
            last[key] = at
        return repeated


def _bodies(records: list[dict[str, Any]], rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """Format-2 messages of 1 to 5 records each: many messages, many calls to fail."""
    bodies = []
    start = 0
    while start < len(records):
        size = rng.randint(1, 5)
        chunk = records[start : start + size]
        raw = wire.pack_bson([("events", bson.encode(d), None) for d in chunk])
        attributes = wire.message_attributes(wire.IDENTITY, len(chunk), wire.BSON_RECORDS)
        bodies.append((wire.bson_body(raw, wire.IDENTITY), attributes))
        start += size
    return bodies


def _letter_ids(letters: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    found = []
    for letter in letters:
        reason = letter["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"]
        for item in wire.decode_message(letter["Body"], letter["MessageAttributes"]):
            assert isinstance(item, wire.Record), item
            found.append((wire.record_id(item), reason))
    return found


def test_every_record_ends_under_injected_failures(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    queue = make_queue(visibility_timeout=3, max_receive_count=MAX_RECEIVE_COUNT)
    records = [{"_id": ObjectId(), "n": n, "pad": "x" * 80} for n in range(RECORDS)]
    poison = {records[i]["_id"] for i in rng.sample(range(RECORDS), POISON)}
    send_bodies(sqs_client, queue.url, _bodies(records, rng))

    injector = Injector(SEED, rate=0.17)
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, socketTimeoutMS=30000)
    sink = FaultySink(client[mongo_db.name], injector, poison)
    service_sqs = sqs.connect(read_timeout=10)
    faulty = FaultyQueue(service_sqs.queue(queue.url), injector)
    settings = Settings(
        queue_urls=(queue.url,), database=mongo_db.name, wait_seconds=1, visibility_timeout=3,
        retry_base_seconds=0.1, retry_max_seconds=1, metrics_port=0, max_pollers=0,
        shutdown_seconds=10, max_attempts=MAX_ATTEMPTS, pollers=4, writers=8,
    )  # fmt: skip
    tracebacks = TracebackLog()
    logging.getLogger().addHandler(tracebacks)
    service = Service(service_options(settings), {queue.url: faulty}, sink, metrics=Metrics())
    letters: list[dict[str, Any]] = []
    events = mongo_db.events
    good = RECORDS - POISON
    started = time.monotonic()
    try:
        service.start()

        def ended() -> bool:
            letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=0))
            dead = {_id for _id, _ in _letter_ids(letters)}
            return events.count_documents({}) >= good and poison <= dead

        assert wait_until(ended, timeout=scale(420, 1800), interval=2)
        # Nothing left behind: the source queue drains too.
        assert wait_until(lambda: faulty.depth().total == 0, 120, interval=1)
    finally:
        service.stop(15)
        logging.getLogger().removeHandler(tracebacks)
        client.close()
    seconds = time.monotonic() - started

    stored = {doc["_id"] for doc in events.find({}, {"_id": 1})}
    expected = {r["_id"] for r in records} - poison
    dead = _letter_ids(letters)
    dead_ids = {_id for _id, _ in dead}
    summary = {
        "records": RECORDS, "injected": injector.total, "lost": len(expected - stored),
        "poison_dead_lettered": len(poison & dead_ids), "seconds": round(seconds, 1),
        **{f"injected_{k}": v for k, v in sorted(injector.struck.items())},
    }  # fmt: skip
    print(summary)
    record_summary(faults=injector.total, lost=len(expected - stored), duplicates=0)
    assert injector.total >= 1000, injector.struck
    assert stored == expected  # 0 lost; a document per _id, so no duplicates
    assert events.count_documents({}) == len(expected)
    # Every dead letter carries a reason, and only the poison records were given up:
    # exactly at the bound, with the failure said for the sender.
    assert dead_ids == poison
    internal = "the consumer could not write this record: internal error in the write stage"
    assert all(
        r == f"still failing after {MAX_ATTEMPTS} attempts: {internal} (KeyError)" for _, r in dead
    )
    # No message ever carried the bound: at the bound a record is dead-lettered, not
    # sent again; and each poison record went all the way to it.
    carried = {_id: max(m.attempts for m in seen) for _id, seen in faulty.receives.items()}
    assert max(carried.values()) < MAX_ATTEMPTS, Counter(carried.values())
    assert {carried[_id] for _id in poison} == {MAX_ATTEMPTS - 1}
    assert set(sink.poison_writes()) == poison
    assert tracebacks.repeats_within(60.0) == []
