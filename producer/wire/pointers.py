"""Payloads kept in S3 (a claim check): the pointer message AWS's extended clients write.

A record too large for one SQS message is written to an S3 object, and the message
carries a pointer to it instead, in the format of AWS's SQS extended client libraries
(Java `amazon-sqs-java-extended-client-lib` 2.x, Python `amazon-sqs-extended-client`):

    body       ["software.amazon.payloadoffloading.PayloadS3Pointer",
                {"s3BucketName": "<bucket>", "s3Key": "<key>"}]
    attribute  ExtendedPayloadSize (Number): the payload's size in bytes

The object holds the message body that the pointer stands in for, as text (UTF-8), and
the pointer message keeps every other attribute of that message (the format, the
encoding). Version 1 of the Java library wrote the attribute `SQSLargePayloadSize` and
the class name `com.amazon.sqs.javamessaging.MessageS3Pointer`; both are read too."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .attributes import Attributes
from .errors import WireError

POINTER_CLASS: Final = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS: Final = "com.amazon.sqs.javamessaging.MessageS3Pointer"
SIZE_ATTRIBUTE: Final = "ExtendedPayloadSize"
LEGACY_SIZE_ATTRIBUTE: Final = "SQSLargePayloadSize"
POINTER_ATTRIBUTES: Final = (SIZE_ATTRIBUTE, LEGACY_SIZE_ATTRIBUTE)
# A pointer's body is a few hundred bytes; anything longer is not one.
_MAX_POINTER_CHARS: Final = 4096
_BUCKET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_ADDRESS: Final = re.compile(r"\d+\.\d+\.\d+\.\d+")


def bucket_name_problem(name: str) -> str | None:
    """Why `name` cannot be an S3 bucket's name (S3's naming rules), or None."""
    if not _BUCKET_NAME.fullmatch(name) or ".." in name or _IP_ADDRESS.fullmatch(name):
        return (
            f"{name[:80]!r} is not an S3 bucket name (3-63 lowercase letters, digits, "
            "'.' and '-', starting and ending with a letter or digit)"
        )
    return None


@dataclass(frozen=True, slots=True)
class PayloadPointer:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def is_pointer(attributes: Mapping[str, Any] | None) -> bool:
    """Does a message with these attributes carry a pointer instead of its body?"""
    if not attributes:
        return False
    return any(name in attributes for name in POINTER_ATTRIBUTES)


def pointer_body(pointer: PayloadPointer) -> str:
    """The pointer as the extended clients write it (Jackson's compact JSON)."""
    details = {"s3BucketName": pointer.bucket, "s3Key": pointer.key}
    return json.dumps([POINTER_CLASS, details], separators=(",", ":"))


def pointer_attributes(attributes: Attributes, payload_bytes: int) -> Attributes:
    """The attributes of the message the pointer stands in for, and the payload's size."""
    marked = dict(attributes)
    marked[SIZE_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(payload_bytes)}
    return marked


def payload_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A pointer message's attributes as the payload is read with: without the size."""
    return {name: value for name, value in attributes.items() if name not in POINTER_ATTRIBUTES}


def parse_pointer(body: str) -> PayloadPointer:
    """The bucket and key of a pointer body. Raises WireError when it is not one."""
    if len(body) > _MAX_POINTER_CHARS:
        raise WireError(f"payload pointer is {len(body)} characters: not a pointer")
    try:
        parsed = json.loads(body)
    except ValueError:
        raise WireError("payload pointer is not JSON") from None
    if not (
        isinstance(parsed, list)
        and len(parsed) == 2
        and parsed[0] in (POINTER_CLASS, LEGACY_POINTER_CLASS)
        and isinstance(parsed[1], dict)
    ):
        raise WireError(f'payload pointer must be ["{POINTER_CLASS}", {{"s3BucketName", "s3Key"}}]')
    bucket, key = parsed[1].get("s3BucketName"), parsed[1].get("s3Key")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise WireError("payload pointer names no s3BucketName or no s3Key")
    return PayloadPointer(bucket, key)
