"""Packing records into messages and messages into SendMessageBatch calls."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from producer import Producer, wire
from producer.buffer import Item
from producer.encode import Encoder
from producer.packing import MAX_BATCH_ENTRIES, Message, Packer, batches
from tests.support.producer_fakes import FakeSQS

URL = "http://sqs.local/000000000000/q"
FIFO_URL = "http://sqs.local/000000000000/q.fifo"


def entry_size(entry: dict[str, object]) -> int:
    body = entry["MessageBody"]
    assert isinstance(body, str)
    attributes = entry["MessageAttributes"]
    assert isinstance(attributes, dict)
    return len(body.encode()) + wire.attributes_size(attributes)


def item(
    document: dict[str, object], version: str = wire.JSON_LINES, key: str | None = None
) -> Item:
    return Encoder(version).item("c", document, key)[0]


def items(count: int, size: int, version: str = wire.JSON_LINES) -> list[Item]:
    return [item({"_id": n, "p": "x" * size}, version) for n in range(count)]


def ids_in(messages: list[Message]) -> list[object]:
    return [
        wire.record_id(r)  # type: ignore[arg-type]
        for m in messages
        for r in wire.decode_message(m.body, m.attributes)
    ]


@pytest.mark.parametrize("version", wire.FORMATS)
@pytest.mark.parametrize("encoding", wire.ENCODINGS)
def test_messages_stay_within_the_limit_including_attributes(encoding: str, version: str) -> None:
    packer = Packer(8192, encoding, version=version)
    random_hex = item({"_id": "r", "p": random.Random(5).randbytes(3000).hex()}, version)
    records = [*items(500, 700, version), random_hex]
    messages = packer.pack(records)
    for message in messages:
        assert message.size == len(message.body) + wire.attributes_size(message.attributes)
        assert message.size <= 8192
    assert ids_in(messages) == [*range(500), "r"]
    if encoding != wire.IDENTITY:  # compressible records get packed far denser
        assert len(messages) < len(Packer(8192, version=version).pack(records)) / 2


@pytest.mark.parametrize("version", wire.FORMATS)
def test_identity_packing_fills_messages_close_to_the_limit(version: str) -> None:
    messages = Packer(8192, version=version).pack(items(200, 1000, version))
    assert all(m.size > 8192 - 1400 for m in messages[:-1])


def test_batches_hold_at_most_ten_messages_and_max_batch_bytes() -> None:
    messages = Packer(2048).pack(items(100, 300))
    groups = list(batches(messages, 8000))
    assert sum(len(g) for g in groups) == len(messages)
    assert all(len(g) <= MAX_BATCH_ENTRIES for g in groups)
    assert all(sum(m.size for m in g) <= 8000 for g in groups)
    many_small = Packer(2048).pack(items(300, 1))
    assert max(len(g) for g in batches([m for m in many_small] * 30, 10**6)) == 10


def test_producer_calls_respect_all_limits(tmp_path: Path) -> None:
    fake = FakeSQS()
    with Producer(
        URL,
        sqs_client=fake,
        journal_dir=tmp_path,
        max_message_bytes=4096,
        max_batch_bytes=16384,
        linger_seconds=10,
    ) as producer:
        for n in range(400):
            producer.send("events", {"n": n, "pad": "y" * 200})
        assert producer.flush(5)
    assert fake.calls
    for _, entries in fake.calls:
        assert 1 <= len(entries) <= 10
        assert all(entry_size(e) <= 4096 for e in entries)
        assert sum(entry_size(e) for e in entries) <= 16384
    assert [r.document["n"] for r in fake.records()] == list(range(400))


def test_format_1_is_one_record_per_line_and_attributes_describe_the_body(tmp_path: Path) -> None:
    fake = FakeSQS()
    options = {"compression": "zstd", "wire_format": 1}
    with Producer(URL, sqs_client=fake, journal_dir=tmp_path, **options) as producer:
        for n in range(50):
            producer.send("events", {"n": n})
        producer.flush(5)
    (_, [entry]) = fake.calls[0]
    attributes = entry["MessageAttributes"]
    assert wire.attribute_value(attributes, wire.ENCODING_ATTRIBUTE) == "zstd"
    assert wire.attribute_value(attributes, wire.RECORDS_ATTRIBUTE) == "50"
    text = wire.decode_body(entry["MessageBody"], attributes)
    assert [json.loads(line)["d"]["n"] for line in text.split("\n")] == list(range(50))


def test_fifo_groups_by_partition_key_with_deterministic_dedup_ids(tmp_path: Path) -> None:
    fake = FakeSQS()
    with Producer(FIFO_URL, sqs_client=fake, journal_dir=tmp_path, linger_seconds=10) as producer:
        for n in range(30):
            producer.send("events", {"_id": n, "n": n}, partition_key=("a", "b", None)[n % 3])
        producer.flush(5)
    entries = [e for _, es in fake.calls for e in es]
    groups: dict[str, list[int]] = {}
    for entry in entries:
        records = wire.decode_message(entry["MessageBody"], entry["MessageAttributes"])
        groups.setdefault(entry["MessageGroupId"], []).extend(
            r.document["n"]
            for r in records  # type: ignore[union-attr]
        )
        assert len(entry["MessageDeduplicationId"]) == 64
    assert groups == {
        "a": list(range(0, 30, 3)),
        "b": list(range(1, 30, 3)),
        "default": list(range(2, 30, 3)),
    }

    # The same records packed again get the same deduplication id (SQS drops the resend).
    def pair(x: str, y: str, second_id: str) -> list[Item]:
        return [Item(x, "c", 1, "a", "int:1"), Item(y, "c", 1, "a", second_id)]

    again = Packer(65536, fifo=True).pack(pair("x", "y", "int:2"))
    twice = Packer(65536, fifo=True).pack(pair("x2", "y2", "int:2"))
    assert again[0].dedup_id == twice[0].dedup_id
    other = Packer(65536, fifo=True).pack(pair("x", "y", "int:3"))
    assert other[0].dedup_id != again[0].dedup_id


def test_standard_queue_entries_have_no_fifo_fields(tmp_path: Path) -> None:
    fake = FakeSQS()
    with Producer(URL, sqs_client=fake, journal_dir=tmp_path) as producer:
        producer.send("events", {}, partition_key="a")
        producer.flush(5)
    entry = fake.calls[0][1][0]
    assert "MessageGroupId" not in entry and "MessageDeduplicationId" not in entry


def test_mixed_fifo_and_standard_queues_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FIFO"):
        Producer([URL, FIFO_URL], sqs_client=FakeSQS(), journal_dir=tmp_path)


@pytest.mark.parametrize(
    "options",
    [
        {"max_message_bytes": 100},
        {"max_batch_bytes": 1000},
        {"compression": "brotli"},
        {"overflow": "drop"},
        {"journal_fsync": "sometimes"},
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Producer(URL, sqs_client=FakeSQS(), journal_dir=tmp_path, **options)


def test_standard_queues_keep_one_partition_key_per_message() -> None:
    packer = Packer(64 * 1024)
    lines = [
        item({"_id": n}, key=key) for n, key in enumerate(["u1", "u2", None, "u1", "u2", None])
    ]
    messages = packer.pack(lines)
    keys = [wire.attribute_value(m.attributes, wire.PARTITION_ATTRIBUTE) for m in messages]
    assert sorted(keys, key=str) == sorted(["u1", "u2", None], key=str)
    for message in messages:
        key = wire.attribute_value(message.attributes, wire.PARTITION_ATTRIBUTE)
        assert {item.partition_key for item in message.items} == {key}
        assert message.group_id is None and message.size <= 64 * 1024


def _audit_record(rng: random.Random, n: int) -> dict[str, object]:
    """About 1 KB, compressible as real operation records are (repeated keys and words)."""
    words = ["login", "update", "delete", "export", "billing", "profile", "admin", "api"]
    return {
        "user_id": f"u-{rng.randrange(100_000):08d}", "action": rng.choice(words), "n": n,
        "path": "/" + "/".join(rng.choice(words) for _ in range(4)),
        "detail": " ".join(rng.choice(words) + str(rng.randrange(1000)) for _ in range(120)),
    }  # fmt: skip


@pytest.mark.parametrize("version", wire.FORMATS)
def test_compressed_messages_are_filled_and_no_take_ends_in_a_message_of_a_few_records(
    tmp_path: Path, version: str
) -> None:
    # SQS bills each 64 KiB of a request: half-full messages cost twice what they need.
    # A take of several messages' worth once ended in a message of 2 records, whose poor
    # compression also kept the packer's estimate, and every message, at about half size.
    fake = FakeSQS()
    rng = random.Random(11)
    with Producer(URL, sqs_client=fake, journal_dir=tmp_path, wire_format=version,
                  compression="zstd", linger_seconds=10) as producer:  # fmt: skip
        for n in range(8_000):  # 17 takes of four messages each: 17 take boundaries
            producer.send("events", _audit_record(rng, n))
        assert producer.flush(30)
    messages = [entry for _, entries in fake.calls for entry in entries]
    settled = messages[8:]  # once the packer has seen a few messages
    sizes = [entry_size(e) for e in settled]
    assert max(sizes) <= 65536
    assert sum(sizes) / len(sizes) > 0.8 * 65536
    records = [int(e["MessageAttributes"][wire.RECORDS_ATTRIBUTE]["StringValue"]) for e in settled]
    assert min(records[:-1]) > max(records) / 4  # only the very last may be short
    assert len(fake.records()) == 8_000


def test_a_packer_misled_about_compression_still_loses_nothing_and_overflows_nothing(
    tmp_path: Path,
) -> None:
    # Adversarial for the tail merge and the learnt ratio: the packer learns on text that
    # compresses tenfold, then gets records that do not compress at all, of every size.
    fake = FakeSQS()
    rng = random.Random(23)
    sent: list[int] = []
    with Producer(URL, sqs_client=fake, journal_dir=tmp_path, wire_format="2",
                  compression="zstd", max_message_bytes=8192, linger_seconds=10) as producer:  # fmt: skip
        for n in range(3000):
            if n < 1000 or n % 7 == 0:
                document: dict[str, object] = {
                    "n": n,
                    "text": "same words again " * rng.randrange(1, 40),
                }
            else:
                document = {"n": n, "noise": rng.randbytes(rng.randrange(10, 5000)).hex()}
            producer.send("events", document)
            sent.append(n)
        assert producer.flush(30)
    entries = [entry for _, batch in fake.calls for entry in batch]
    assert max(entry_size(e) for e in entries) <= 8192
    assert [r.document["n"] for r in fake.records()] == sent
