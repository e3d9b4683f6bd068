"""Payloads kept in S3 (ingest/pipeline/claims.py): deleted only after their message,
kept while a dead letter or a resend carries the same pointer, and counted (not
raised) when S3 will not delete them."""

from __future__ import annotations

from ingest.metrics import Metrics
from ingest.payloads import MemoryPayloads
from ingest.pipeline.claims import PayloadCleanup
from ingest.pipeline.messages import Settlement
from ingest.queues.base import DeadLetter, Message, Resend
from producer import wire

ATTRIBUTES = wire.pointer_attributes(wire.message_attributes(wire.ZSTD, 1, "2"), 3)


def offloaded(payloads: MemoryPayloads, key: str) -> tuple[Message, wire.PayloadPointer]:
    pointer = wire.PayloadPointer("payloads", key)
    payloads.put(pointer, b"...")
    return Message("memory://q", key, "r", wire.pointer_body(pointer), ATTRIBUTES), pointer


def count(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_payloads_of_deleted_messages_go_and_those_still_pointed_to_stay() -> None:
    payloads, metrics = MemoryPayloads(), Metrics()
    done, done_pointer = offloaded(payloads, "done")
    lettered, _ = offloaded(payloads, "lettered")
    resent, _ = offloaded(payloads, "resent")
    undeleted, _ = offloaded(payloads, "undeleted")
    small = Message("memory://q", "small", "r", wire.encode_record("e", {"_id": 1}))
    settlement = Settlement(
        delete=[done, small],
        dead_letters=[DeadLetter(lettered, lettered.body, "refused", lettered.attributes)],
        resends=[Resend(resent, resent.body, resent.attributes)],
        delete_after_sends=[lettered, resent, undeleted],
    )
    # SQS deleted all but `undeleted`.
    PayloadCleanup(payloads, metrics).after_delete(settlement, [done, small, lettered, resent])
    assert payloads.deleted == [done_pointer]
    assert set(payloads.objects) == {("payloads", k) for k in ("lettered", "resent", "undeleted")}
    assert count(metrics, "ingest_payloads_deleted_total") == 1


def test_a_payload_s3_will_not_delete_is_counted_and_left_to_the_lifecycle_rule() -> None:
    payloads, metrics = MemoryPayloads(), Metrics()
    message, _ = offloaded(payloads, "k")
    payloads.down = True
    PayloadCleanup(payloads, metrics).after_delete(Settlement(delete=[message]), [message])
    assert count(metrics, "ingest_payloads_left_total") == 1
    assert count(metrics, "ingest_payloads_deleted_total") == 0 and len(payloads.objects) == 1


def test_a_pointer_attribute_on_a_body_that_is_not_a_pointer_deletes_nothing() -> None:
    payloads, metrics = MemoryPayloads(), Metrics()
    offloaded(payloads, "k")
    unreadable = Message("memory://q", "m", "r", "not a pointer", ATTRIBUTES)
    PayloadCleanup(payloads, metrics).after_delete(Settlement(delete=[unreadable]), [unreadable])
    assert payloads.deleted == [] and count(metrics, "ingest_payloads_left_total") == 0
