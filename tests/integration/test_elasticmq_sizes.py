"""What ElasticMQ 1.7.1 (the local stack's SQS, `sqs-limits = strict`) accepts as message
size, against SQS: docs/large-records.md and README.md list the differences."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

MIB = 1024 * 1024


def test_a_message_body_up_to_1_mib_is_taken_and_one_byte_more_is_refused(
    make_queue: Any, sqs_client: Any
) -> None:
    url = make_queue().url
    sqs_client.send_message(QueueUrl=url, MessageBody="a" * MIB)
    with pytest.raises(ClientError) as refused:
        sqs_client.send_message(QueueUrl=url, MessageBody="a" * (MIB + 1))
    error = refused.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("InvalidAttributeValue", "MessageTooLong")


def test_unlike_sqs_attributes_do_not_count_toward_the_limit(
    make_queue: Any, sqs_client: Any
) -> None:
    url = make_queue().url
    attributes = {"ingest-format": {"DataType": "String", "StringValue": "x" * 100}}
    # SQS counts body and attributes together: it would refuse this message.
    sqs_client.send_message(QueueUrl=url, MessageBody="a" * MIB, MessageAttributes=attributes)


def test_a_batch_is_limited_to_1_mib_in_all_as_on_sqs(make_queue: Any, sqs_client: Any) -> None:
    url = make_queue().url
    half = [{"Id": str(n), "MessageBody": "a" * (MIB // 2)} for n in range(2)]
    assert len(sqs_client.send_message_batch(QueueUrl=url, Entries=half)["Successful"]) == 2
    with pytest.raises(ClientError, match="MessageTooLong"):
        over = [{"Id": str(n), "MessageBody": "a" * 600_000} for n in range(2)]
        sqs_client.send_message_batch(QueueUrl=url, Entries=over)


def test_maximum_message_size_is_neither_kept_nor_enforced(
    make_queue: Any, sqs_client: Any
) -> None:
    url = make_queue().url
    sqs_client.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "2048"})
    found = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"])
    assert "MaximumMessageSize" not in found.get("Attributes", {})  # the producer takes 1 MiB
    sqs_client.send_message(QueueUrl=url, MessageBody="a" * 4096)  # SQS would refuse it
