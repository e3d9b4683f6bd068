"""Decode stage (ingest/pipeline/decode.py): a message becomes its records and bad
records, or the reason it is unreadable; a pointer message is decoded from its payload.
The bad-input corpus through the decoder is in test_bad_input.py and test_bad_input_bson.py."""

from __future__ import annotations

import pytest

from ingest.errors import PayloadUnavailable
from ingest.payloads import MemoryPayloads
from ingest.pipeline.decode import decode
from ingest.queues.base import Message
from producer import wire


def message(body: str, attributes: dict[str, object] | None = None) -> Message:
    return Message("memory://q", "m", "r", body, attributes or {})


def pointer_message(payloads: MemoryPayloads, *ids: int) -> Message:
    raw = wire.pack_bson([("events", wire.encode_document({"_id": i}), None) for i in ids])
    body = wire.bson_body(raw, wire.ZSTD)
    pointer = wire.PayloadPointer("payloads", "k")
    payloads.put(pointer, body.encode())
    attributes = wire.message_attributes(wire.ZSTD, len(ids), wire.BSON_RECORDS)
    return message(wire.pointer_body(pointer), wire.pointer_attributes(attributes, len(body)))


def test_good_lines_are_records_and_a_bad_one_stays_with_its_number() -> None:
    good = [wire.encode_record("events", {"_id": n}) for n in range(2)]
    decoded = decode(message("\n".join([good[0], "not json", good[1]])))
    assert decoded.error is None
    assert [wire.record_id(r) for r in decoded.records] == [0, 1]
    (bad,) = decoded.bad_records
    assert bad.number == 2 and bad.source == "not json"


def test_a_message_of_one_bad_record_is_unreadable_as_a_whole() -> None:
    decoded = decode(message("not json"))
    assert decoded.error is not None and "not valid JSON" in decoded.error
    assert not decoded.records and not decoded.bad_records


def test_a_pointer_message_is_decoded_from_its_payload() -> None:
    payloads = MemoryPayloads()
    decoded = decode(pointer_message(payloads, 1, 2, 3), payloads=payloads)
    assert decoded.error is None and [wire.record_id(r) for r in decoded.records] == [1, 2, 3]


def test_a_pointer_without_a_payload_store_or_payload_is_unreadable_with_the_reason() -> None:
    payloads = MemoryPayloads()
    pointed = pointer_message(payloads, 1)
    assert decode(pointed).error == "payload s3://payloads/k: this consumer has no payload store"
    payloads.objects.clear()
    assert decode(pointed, payloads=payloads).error == (
        "payload s3://payloads/k is missing (NoSuchKey)"
    )


def test_s3_not_answering_raises_for_the_write_stage_to_hand_the_message_back() -> None:
    payloads = MemoryPayloads()
    pointed = pointer_message(payloads, 1)
    payloads.down = True
    with pytest.raises(PayloadUnavailable):
        decode(pointed, payloads=payloads)


def test_a_payload_larger_than_a_body_may_decode_to_is_not_fetched_whole() -> None:
    payloads = MemoryPayloads()
    pointed = pointer_message(payloads, 1)
    payloads.put(wire.PayloadPointer("payloads", "k"), b"x" * 10_000)  # past 64 * 4/3 + 4096
    decoded = decode(pointed, max_decoded_bytes=64, payloads=payloads)
    assert decoded.error is not None and decoded.error.startswith("payload s3://payloads/k ")
    assert "10000" in decoded.error and not decoded.records
