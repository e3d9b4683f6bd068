"""send(): _id handling, validation, encoding on the caller's thread, no I/O."""

from __future__ import annotations

import base64
import random
import threading
from pathlib import Path

import pytest
from bson.objectid import ObjectId

from producer import Producer, ProducerClosed, RecordTooLarge, WireError, wire
from tests.support.producer_fakes import FakeSQS
from tests.support.waiting import wait_until
from tests.support.watched_sqs import SENDER_THREAD, WatchedSQS

URL = "http://sqs.local/000000000000/q"


def make(tmp_path: Path, fake: FakeSQS, **options: object) -> Producer:
    return Producer(URL, sqs_client=fake, journal_dir=tmp_path / "journal", **options)


def test_send_stamps_a_new_object_id_on_the_callers_dict(tmp_path: Path) -> None:
    fake = FakeSQS()
    with make(tmp_path, fake) as producer:
        doc: dict[str, object] = {"n": 1}
        returned = producer.send("events", doc)
        assert isinstance(returned, ObjectId)
        assert doc["_id"] is returned
        assert producer.flush(5)
    [record] = fake.records()
    assert record.collection == "events"
    assert record.document == {"n": 1, "_id": returned}


def test_send_keeps_a_caller_set_id(tmp_path: Path) -> None:
    fake = FakeSQS()
    with make(tmp_path, fake) as producer:
        assert producer.send("events", {"_id": "order-17", "n": 2}) == "order-17"
        producer.flush(5)
    assert [r.document["_id"] for r in fake.records()] == ["order-17"]


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_id_of_none_is_stamped_like_an_absent_one(tmp_path: Path, version: str) -> None:
    """A model dumped with `_id: None` (no id yet): kept, all such records would be one
    document with a null _id in MongoDB, the others lost as its duplicates."""
    fake = FakeSQS()
    with make(tmp_path, fake, wire_format=version) as producer:
        docs: list[dict[str, object]] = [{"_id": None, "n": n} for n in range(3)]
        returned = [producer.send("events", doc) for doc in docs]
        assert producer.flush(5)
    assert all(isinstance(_id, ObjectId) for _id in returned) and len(set(returned)) == 3
    assert [doc["_id"] for doc in docs] == returned
    assert [r.document["_id"] for r in fake.records()] == returned


def test_later_mutation_by_the_caller_does_not_change_what_is_sent(tmp_path: Path) -> None:
    fake = FakeSQS()
    with make(tmp_path, fake, linger_seconds=10) as producer:
        doc: dict[str, object] = {"state": "before"}
        producer.send("events", doc)
        doc["state"] = "after"
        producer.flush(5)
    assert fake.records()[0].document["state"] == "before"


@pytest.mark.parametrize("name", ["", "system.users", "a$b", ".x", 42])
def test_bad_collection_names_raise_wire_error(tmp_path: Path, name: object) -> None:
    with make(tmp_path, FakeSQS()) as producer, pytest.raises(WireError):
        producer.send(name, {"n": 1})  # type: ignore[arg-type]
    assert producer.stats().accepted == 0


def test_unencodable_document_raises_wire_error(tmp_path: Path) -> None:
    with make(tmp_path, FakeSQS()) as producer, pytest.raises(WireError):
        producer.send("events", {"x": object()})


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_record_past_the_packing_budget_travels_alone(tmp_path: Path, version: str) -> None:
    noise = base64.b64encode(random.Random(3).randbytes(4500)).decode()  # compresses badly
    fake = FakeSQS()
    with make(tmp_path, fake, max_message_bytes=4096, wire_format=version) as producer:
        producer.send("events", {"n": 1})
        producer.send("events", {"blob": noise})
        producer.send("events", {"n": 2})
        assert producer.flush(5)
    sizes = [
        (len(e["MessageBody"]) + wire.attributes_size(e["MessageAttributes"]), e)
        for _, entries in fake.calls
        for e in entries
    ]
    alone = [e for size, e in sizes if size > 4096]
    assert (
        len(alone) == 1
        and wire.decode_message(alone[0]["MessageBody"], alone[0]["MessageAttributes"])[
            0
        ].collection
        == "events"
    )
    assert [r.document.get("n") for r in fake.records()] == [1, None, 2]


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_record_past_one_sqs_message_is_refused_naming_the_bucket_option(
    tmp_path: Path, version: str
) -> None:
    noise = base64.b64encode(random.Random(3).randbytes(800_000)).decode()  # > 1 MiB as text
    with make(tmp_path, FakeSQS(), wire_format=version) as producer:
        with pytest.raises(RecordTooLarge, match=r"at most \d+ bytes .*set payload_bucket") as got:
            producer.send("events", {"blob": noise})
        assert "\n" not in str(got.value)
        producer.send("events", {"blob": "x" * 3_000_000 if version == "2" else "x" * 900_000})
        assert producer.stats().accepted == 1  # format 2: what fits compressed goes too


def test_record_exactly_at_the_limit_fits_one_message(tmp_path: Path) -> None:
    fake = FakeSQS()
    with make(tmp_path, fake, max_message_bytes=4096, wire_format=1) as producer:
        limit = wire.single_record_limit(4096)
        probe = {"_id": "a", "blob": ""}
        overhead = len('{"c":"e","d":{"_id":"a","blob":""}}')
        probe["blob"] = "x" * (limit - overhead)
        producer.send("e", probe)
        producer.flush(5)
    [(_, [entry])] = fake.calls
    size = len(entry["MessageBody"]) + wire.attributes_size(entry["MessageAttributes"])
    assert size == 4096


@pytest.mark.timeout(60)
def test_send_does_no_network_io_and_returns_while_sqs_hangs(tmp_path: Path) -> None:
    fake = WatchedSQS()
    fake.gate = threading.Event()  # every SQS call hangs until released
    producer = make(tmp_path, fake, linger_seconds=0)
    try:
        for n in range(200):
            producer.send("events", {"n": n})
        # All 200 returned while SQS hangs: the only caller is the sender thread.
        assert producer.stats().accepted == 200 and fake.callers <= {SENDER_THREAD}
        assert not producer.flush(0.2)  # nothing can be sent yet
        fake.gate.set()
        assert producer.flush(5)
        assert sorted(r.document["n"] for r in fake.records()) == list(range(200))
        assert fake.callers == {SENDER_THREAD}
    finally:
        fake.gate.set()
        producer.close()


def test_send_after_close_raises(tmp_path: Path) -> None:
    producer = make(tmp_path, FakeSQS())
    producer.close()
    with pytest.raises(ProducerClosed):
        producer.send("events", {})


def test_linger_flushes_without_an_explicit_flush(tmp_path: Path) -> None:
    fake = FakeSQS()
    with make(tmp_path, fake, linger_seconds=0.05) as producer:
        producer.send("events", {"n": 1})
        assert wait_until(lambda: fake.calls), "linger elapsed but nothing was sent"
        assert producer.stats().sent == 1


def test_stats_count_records(tmp_path: Path) -> None:
    fake = FakeSQS()
    with make(tmp_path, fake) as producer:
        for n in range(30):
            producer.send("events", {"n": n})
        producer.flush(5)
        stats = producer.stats()
    assert (stats.accepted, stats.sent, stats.buffered, stats.failed) == (30, 30, 0, 0)
    assert stats.as_dict()["sent"] == 30


def test_many_threads_send_concurrently(tmp_path: Path) -> None:
    fake = FakeSQS()
    with make(tmp_path, fake) as producer:

        def work(base: int) -> None:
            for n in range(250):
                producer.send("events", {"n": base + n})

        threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert producer.flush(10)
    got = sorted(r.document["n"] for r in fake.records())
    assert got == sorted(i * 1000 + n for i in range(8) for n in range(250))
