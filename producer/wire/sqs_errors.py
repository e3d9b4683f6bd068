"""What an error SQS answered with means: one rule for the producer and the consumer.

Judged by the answer's error code and HTTP status alone (no botocore here), into:

* TRANSIENT: throttling, SQS's own failure, any 5xx or 429: the same call may work
  later, so retry it with backoff or wait.
* REQUEST_FAULT: SQS blames the request itself (malformed, too large, bad entry ids):
  sending the same request again cannot help.
* REFUSED: any other refusal (no such queue, access denied, a KMS key disabled): it
  fails until someone changes something outside the request.

SQS answers some codes with the legacy prefix "AWS.SimpleQueueService." (the
query-compatible header); the rule ignores it."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

LEGACY_PREFIX: Final = "AWS.SimpleQueueService."


class SqsErrorKind(enum.Enum):
    TRANSIENT = "transient"
    REQUEST_FAULT = "request fault"
    REFUSED = "refused"


# Throttling, as SQS and the AWS front ends name it.
THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "SlowDown",
        "KmsThrottled",
    }
)
# SQS's own trouble: the request was fine, SQS could not serve it now.
SERVICE_TROUBLE_CODES: Final = frozenset(
    {
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        # ReceiveMessage with the in-flight limit reached: it frees up as messages settle.
        "OverLimit",
    }
)
TRANSIENT_CODES: Final = THROTTLING_CODES | SERVICE_TROUBLE_CODES

# The request itself is wrong: sending it again gets the same answer.
REQUEST_FAULT_CODES: Final = frozenset(
    {
        "InvalidParameterValue",
        "InvalidMessageContents",
        "MissingParameter",
        "BatchRequestTooLong",
        "TooManyEntriesInBatchRequest",
        "BatchEntryIdsNotDistinct",
        "InvalidBatchEntryId",
        "EmptyBatchRequest",
        "InvalidAttributeName",
        "InvalidAttributeValue",
    }
)

TRANSIENT_STATUS: Final = 500  # this and above: the server's failure
TOO_MANY_REQUESTS: Final = 429


def classify_sqs_error(code: str, status: int = 0) -> SqsErrorKind:
    """The kind of an SQS error answer, from its code and HTTP status (0: unknown)."""
    name = code.removeprefix(LEGACY_PREFIX)
    if name in TRANSIENT_CODES or status >= TRANSIENT_STATUS or status == TOO_MANY_REQUESTS:
        return SqsErrorKind.TRANSIENT
    if name in REQUEST_FAULT_CODES:
        return SqsErrorKind.REQUEST_FAULT
    return SqsErrorKind.REFUSED


def sqs_error_of(response: Mapping[str, Any]) -> tuple[str, int]:
    """(code, HTTP status) of an error answer as botocore parses it
    (ClientError.response); "" and 0 for what it lacks."""
    error = response.get("Error") or {}
    metadata = response.get("ResponseMetadata") or {}
    return str(error.get("Code") or ""), int(metadata.get("HTTPStatusCode") or 0)
