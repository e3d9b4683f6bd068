"""A message too large for the queue: its body goes to S3, a pointer goes through SQS.

The pointer is the one AWS's SQS extended clients write (producer/wire/pointers.py), so
their consumers read it too. The sender thread calls this for the few messages past the
queue's limit (each holds one record: the packer sends such a record alone).

Written on boto3's S3 client rather than with AWS's Python extended client
(`amazon-sqs-extended-client`), because that library patches boto3's Session for the
whole process when imported (a web app's other clients too), offloads only past a fixed
256 KiB, and deletes the S3 object before the SQS message (a redelivery would find it
gone); docs/large-records.md has the measurements.

Failures are judged by what S3 did, as the sender judges SQS's:

* no answer (connection refused, a connect timeout): S3 is down. The breaker counts it,
  and the message's record goes to the journal, to be sent when S3 is back;
* an answer saying "later" (5xx, throttling, a lost reply): retried with backoff, the
  same key each time (a retry overwrites); still failing, as "down";
* a refusal of the request itself (too large, a bad argument): the record is rejected
  (counted as failed, on_error, the rejected file): sending it again cannot help;
* any other refusal (access denied, no such bucket): as "down", logged as an error, so
  the records wait in the journal for someone to fix the bucket or the policy.

An object that may have been written but whose pointer is not sent (the put's answer
was lost, or SQS then refused or never took the pointer) is deleted; when that fails
too, it is logged with its URL, and the bucket's lifecycle rule is the backstop."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from . import wire
from .breaker import Breaker
from .config import Config
from .packing import Message
from .retrying import LATER, UNREACHABLE, retrying, transport_failure

log = logging.getLogger("producer.offload")

KEY_PREFIX: Final = "ingest-payloads/"
# S3 blames the request itself: the same put can never succeed.
REQUEST_FAULT_CODES: Final = frozenset(
    {
        "EntityTooLarge",
        "InvalidArgument",
        "InvalidRequest",
        "KeyTooLongError",
        "InvalidDigest",
        "BadDigest",
        "MalformedXML",
    }
)


class _Down(Exception):
    """S3 cannot take the put now (no answer, still failing, or refused for a reason
    outside the request)."""


class _Fault(Exception):
    """S3 refused the request itself."""


class _Later(Exception):
    """Worth another try: S3 answered "later", or its answer was lost."""


@dataclass(slots=True)
class Offloaded:
    """What became of the messages offered: in their order, with pointer messages in
    place of the ones put in S3; the messages S3 could not take now; and the ones it
    refused, with the reason."""

    ready: list[Message] = field(default_factory=list)
    held: list[Message] = field(default_factory=list)
    refused: list[tuple[Message, str]] = field(default_factory=list)


class Offloader:
    def __init__(self, bucket: str, config: Config, get_client: Callable[[], Any]) -> None:
        self.bucket = bucket
        self._config = config
        self._get_client = get_client
        self.breaker = Breaker(
            f"s3://{bucket}",
            threshold=config.breaker_threshold,
            reset_seconds=config.breaker_reset_seconds,
            kind="bucket",
        )

    def offload(
        self, messages: Sequence[Message], too_large: Callable[[Message], bool]
    ) -> Offloaded:
        """Puts the body of each message `too_large` says so in S3, in its place a pointer."""
        result = Offloaded()
        held_groups: set[str] = set()
        for message in messages:
            group = _order_key(message)
            if group is not None and group in held_groups:
                result.held.append(message)  # behind a held one of its group: keep the order
            elif not too_large(message):
                result.ready.append(message)
            elif not self.breaker.allow():
                result.held.append(message)
            else:
                self._offload_one(message, result)
            if result.held and result.held[-1] is message and group is not None:
                held_groups.add(group)
        return result

    def _offload_one(self, message: Message, result: Offloaded) -> None:
        pointer = wire.PayloadPointer(self.bucket, f"{KEY_PREFIX}{uuid.uuid4()}")
        payload = message.body.encode("utf-8")
        try:
            self._put_retrying(pointer, payload)
        except _Fault as exc:
            self.breaker.success()  # S3 answered
            result.refused.append((message, f"S3 refused the payload: {exc}"))
            return
        except _Down as exc:
            log.warning("S3 bucket %s unavailable: %s", self.bucket, exc)
            self.breaker.failure()
            if isinstance(exc.__cause__, _Later):  # it may have been written
                self.discard_object(pointer)
            result.held.append(message)
            return
        self.breaker.success()
        body = wire.pointer_body(pointer)
        attributes = wire.pointer_attributes(message.attributes, len(payload))
        size = len(body) + wire.attributes_size(attributes)
        result.ready.append(
            dataclasses.replace(
                message, body=body, attributes=attributes, size=size, payload=pointer
            )
        )

    def _put_retrying(self, pointer: wire.PayloadPointer, payload: bytes) -> None:
        try:
            for attempt in retrying(self._config, _Later):
                with attempt:
                    self._put(pointer, payload)
        except _Later as exc:
            raise _Down(f"still failing after {self._config.max_attempts} attempts: {exc}") from exc

    def _put(self, pointer: wire.PayloadPointer, payload: bytes) -> None:
        try:
            self._get_client().put_object(
                Bucket=pointer.bucket,
                Key=pointer.key,
                Body=payload,
                ContentType="text/plain; charset=utf-8",
            )
        except Exception as exc:
            raise _classify(exc) from exc

    def discard(self, messages: Sequence[Message]) -> None:
        """Pointer messages that will not be sent: their objects are deleted (or reported)."""
        for message in messages:
            if message.payload is not None:
                self.discard_object(message.payload)

    def discard_object(self, pointer: wire.PayloadPointer) -> None:
        try:
            self._get_client().delete_object(Bucket=pointer.bucket, Key=pointer.key)
        except Exception as exc:
            log.error(
                "S3 object %s holds a payload whose pointer was not sent, and could not be "
                "deleted (%s): it stays until the bucket's lifecycle rule removes it",
                pointer.url, exc,
            )  # fmt: skip


def _order_key(message: Message) -> str | None:
    """The group whose order the message keeps: its FIFO group or partition key."""
    if message.group_id is not None:
        return message.group_id
    return wire.attribute_value(message.attributes, wire.PARTITION_ATTRIBUTE)


def _classify(exc: Exception) -> Exception:
    """A failed put, by what S3 did: see the module's docstring."""
    failure = transport_failure(exc)
    if failure == UNREACHABLE:
        return _Down(f"cannot reach S3: {exc}")
    if failure == LATER:
        return _Later(str(exc))
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError: S3 answered
        code, status = wire.sqs_error_of(response)
        if wire.classify_sqs_error(code, status) is wire.SqsErrorKind.TRANSIENT:
            return _Later(f"{code}: {exc}")
        if code in REQUEST_FAULT_CODES:
            return _Fault(f"{code}: {exc}")
        log.error("S3 refused PutObject: %s", exc)
        return _Down(f"{code}: {exc}")
    return _Down(repr(exc))


__all__ = ["KEY_PREFIX", "Offloaded", "Offloader"]
