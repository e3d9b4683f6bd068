"""One reading of SQS's error answers (producer.wire.classify_sqs_error), and the
producer's sender and the consumer's queue seam both following it, code by code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from ingest.errors import QueueRefused, QueueUnavailable
from ingest.queues.sqs import SqsQueue
from producer import Producer
from producer.wire import SqsErrorKind, classify_sqs_error, sqs_error_of
from producer.wire.sqs_errors import LEGACY_PREFIX, REQUEST_FAULT_CODES, TRANSIENT_CODES
from tests.support.producer_fakes import FakeSQS, raise_error

URL = "http://sqs.local/000000000000/q"
TRANSIENT, REQUEST_FAULT, REFUSED = SqsErrorKind

# Refusals SQS gives that blame neither SQS nor the request (and an unknown code).
OTHER_REFUSALS = (
    "AccessDenied",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "InvalidSecurity",
    "KmsDisabled",
    "KmsAccessDenied",
    "UnsupportedOperation",
    "SomethingNewUnknown",
)

# Every code both sides must read alike: at 400, as SQS sends them, and then the
# status alone deciding.
CASES = [
    *((code, 400) for code in sorted(TRANSIENT_CODES | REQUEST_FAULT_CODES)),
    *((code, 400) for code in OTHER_REFUSALS),
    ("AWS.SimpleQueueService.RequestThrottled", 400),
    ("AWS.SimpleQueueService.BatchRequestTooLong", 400),
    ("InvalidParameterValue", 500),
    ("AccessDenied", 503),
    ("", 502),
    ("SomethingNewUnknown", 429),
]


def expected(code: str, status: int) -> SqsErrorKind:
    """The table, written out: what each case must be."""
    name = code.removeprefix(LEGACY_PREFIX)
    if status >= 500 or status == 429 or name in TRANSIENT_CODES:
        return TRANSIENT
    return REQUEST_FAULT if name in REQUEST_FAULT_CODES else REFUSED


def client_error(code: str, status: int, operation: str) -> ClientError:
    answer: Any = {
        "Error": {"Code": code, "Message": "as SQS says it"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(answer, operation)


# ------------------------------------------------------------------ the table


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("ThrottlingException", TRANSIENT),
        ("RequestThrottled", TRANSIENT),
        ("AWS.SimpleQueueService.RequestThrottled", TRANSIENT),
        ("KmsThrottled", TRANSIENT),
        ("ServiceUnavailable", TRANSIENT),
        ("InternalError", TRANSIENT),
        ("OverLimit", TRANSIENT),
        ("BatchRequestTooLong", REQUEST_FAULT),
        ("AWS.SimpleQueueService.BatchEntryIdsNotDistinct", REQUEST_FAULT),
        ("InvalidParameterValue", REQUEST_FAULT),
        ("QueueDoesNotExist", REFUSED),
        ("AWS.SimpleQueueService.NonExistentQueue", REFUSED),
        ("AccessDenied", REFUSED),
        ("KmsDisabled", REFUSED),
        ("", REFUSED),
    ],
)
def test_the_code_decides_below_500(code: str, kind: SqsErrorKind) -> None:
    assert classify_sqs_error(code, 400) is kind


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_5xx_or_429_is_transient_whatever_the_code(status: int) -> None:
    for code in ("InvalidParameterValue", "AccessDenied", "", "Unknown"):
        assert classify_sqs_error(code, status) is TRANSIENT


def test_the_kinds_do_not_overlap() -> None:
    assert not TRANSIENT_CODES & REQUEST_FAULT_CODES


def test_code_and_status_are_read_from_botocores_answer() -> None:
    assert sqs_error_of(client_error("KmsThrottled", 400, "SendMessageBatch").response) == (
        "KmsThrottled",
        400,
    )
    assert sqs_error_of({}) == ("", 0)
    assert sqs_error_of({"Error": {"Code": None}, "ResponseMetadata": {}}) == ("", 0)


# ------------------------------------------------------------------ both sides


def producer_reading(code: str, status: int, journal: Path) -> SqsErrorKind:
    """What the producer's sender does with this answer to SendMessageBatch: retry it
    (transient), reject its records (request fault), or journal them (refused)."""
    answers = [raise_error(client_error(code, status, "SendMessageBatch"))] * 2
    fake = FakeSQS(*answers)
    with Producer(
        URL, sqs_client=fake, journal_dir=journal, max_attempts=2,
        retry_initial_seconds=0.001, retry_max_seconds=0.001, probe_seconds=60,
    ) as producer:  # fmt: skip
        producer.send("events", {"n": 1})
        assert producer.flush(10)
        stats = producer.stats()
    outcome = (stats.retried, stats.failed, stats.journaled)
    readings = {(1, 0, 1): TRANSIENT, (0, 1, 0): REQUEST_FAULT, (0, 0, 1): REFUSED}
    assert outcome in readings, outcome
    return readings[outcome]


class RefusingSQS:
    """A boto3 SQS client whose every ReceiveMessage gets the given error answer."""

    def __init__(self, error: ClientError) -> None:
        self.error = error

    def receive_message(self, **_: Any) -> Any:
        raise self.error


def consumer_reading(code: str, status: int) -> type[Exception]:
    queue = SqsQueue(URL, RefusingSQS(client_error(code, status, "ReceiveMessage")))  # type: ignore[arg-type]
    with pytest.raises((QueueUnavailable, QueueRefused)) as raised:
        queue.receive(10, 0, 30)
    return type(raised.value)


@pytest.mark.parametrize(("code", "status"), CASES)
def test_producer_and_consumer_read_each_answer_alike(
    code: str, status: int, tmp_path: Path
) -> None:
    kind = expected(code, status)
    assert classify_sqs_error(code, status) is kind
    assert producer_reading(code, status, tmp_path) is kind
    assert consumer_reading(code, status) is (
        QueueUnavailable if kind is TRANSIENT else QueueRefused
    )
