"""The queue seam on SQS (or ElasticMQ), through boto3. The only place in the consumer
that creates or holds a boto3 client.

Failures are classified by what SQS did: it did not answer (connection refused, a
timeout, a 5xx, throttling) -> QueueUnavailable; it answered and refused (no such
queue, access denied) -> QueueRefused; no region or credentials -> ConfigError."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from ingest.errors import QUEUE_CALL_FAILED, ConfigError, QueueRefused, QueueUnavailable
from ingest.queues.base import (
    MAX_DELAY_SECONDS,
    DeadLetter,
    Message,
    MoveTask,
    Outgoing,
    QueueDepth,
    Resend,
    chunks,
    dead_letter_attributes,
    dead_letter_name,
    send_groups,
)
from producer.wire import SqsErrorKind, classify_sqs_error

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

    QueueAttributes = dict[QueueAttributeNameType, str]

T = TypeVar("T")

_DEPTH_ATTRIBUTES: Final = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def client(
    region: str | None = None,
    *,
    read_timeout: float = 30,
    connect_timeout: float = 5,
    attempts: int = 3,
    max_pool_connections: int = 50,
) -> SQSClient:
    """An SQS client from boto3's own chain (AWS_ENDPOINT_URL_SQS, AWS_DEFAULT_REGION,
    profiles, roles); `region` only when given, since boto3 ignores AWS_REGION.
    `attempts` counts every try of a call, the first one included."""
    config = Config(
        max_pool_connections=max_pool_connections,
        # total_max_attempts: boto3's "max_attempts" counts retries, one try more.
        retries={"mode": "standard", "total_max_attempts": attempts},
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
    )
    try:
        return boto3.session.Session().client("sqs", region_name=region, config=config)
    except NoRegionError as exc:
        raise ConfigError(
            "no AWS region: set AWS_DEFAULT_REGION (boto3 ignores AWS_REGION) or pass --region"
        ) from exc


# Short timeouts for the calls made before anything runs (and by the operator tools): an
# endpoint that accepts connections and never answers fails them in seconds.
CHECK_TIMEOUT_SECONDS: Final = 4.0


def connect(
    region: str | None = None, *, read_timeout: float | None = None, attempts: int = 3
) -> SqsService:
    """The SQS endpoint of boto3's chain. With `read_timeout` (a long poll's wait and
    some slack), the queues get a client of their own that waits that long for an
    answer, `attempts` times per call."""
    check = client(
        region, read_timeout=CHECK_TIMEOUT_SECONDS, connect_timeout=CHECK_TIMEOUT_SECONDS,
        attempts=1, max_pool_connections=4,
    )  # fmt: skip
    work = None
    if read_timeout is not None:
        work = client(region, read_timeout=read_timeout, attempts=attempts)
    return SqsService(check, work)


@contextlib.contextmanager
def calling(sqs: SQSClient, operation: str, url: str) -> Iterator[None]:
    """Translates boto3's failures of one call into the consumer's error tree."""
    where = f"SQS {operation} on {url}"
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{where}: {code}: {error.get('Message', '')}".rstrip(": ")
        if classify_sqs_error(code, status) is SqsErrorKind.TRANSIENT:  # producer.wire's rule
            raise QueueUnavailable(text) from exc
        raise QueueRefused(text) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ConfigError(f"no AWS credentials for {where}: {exc}") from exc
    except NoRegionError as exc:
        raise ConfigError("no AWS region: set AWS_DEFAULT_REGION or pass --region") from exc
    except BotoCoreError as exc:  # no answer: refused connection, timeouts, closed sockets
        endpoint = sqs.meta.endpoint_url
        raise QueueUnavailable(f"{where}: no answer from {endpoint}: {exc}") from exc


class SqsQueue:
    """A real SQS queue (or ElasticMQ) through a boto3 client."""

    def __init__(
        self,
        url: str,
        sqs: SQSClient,
        dead_letter_url: str | None = None,
        max_receive_count: int = 0,
    ) -> None:
        self.url = url
        self.dead_letter_url = dead_letter_url
        self.max_receive_count = max_receive_count  # from the redrive policy; 0: none
        self._sqs = sqs

    def receive(
        self, max_messages: int, wait_seconds: int, visibility_timeout: int
    ) -> list[Message]:
        with calling(self._sqs, "ReceiveMessage", self.url):
            response = self._sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=visibility_timeout,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=[
                    "ApproximateReceiveCount", "MessageGroupId", "SentTimestamp",
                ],
            )  # fmt: skip
        now = time.monotonic()
        return [
            self._message(raw, now + visibility_timeout) for raw in response.get("Messages", [])
        ]

    def _message(self, raw: MessageTypeDef, visible_until: float) -> Message:
        system: Mapping[str, str] = {str(k): v for k, v in raw.get("Attributes", {}).items()}
        sent = system.get("SentTimestamp")
        return Message(
            queue_url=self.url,
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw.get("Body", ""),
            attributes=raw.get("MessageAttributes", {}),
            receive_count=int(system.get("ApproximateReceiveCount", 1)),
            group_id=system.get("MessageGroupId"),
            sent_at=int(sent) / 1000 if sent else None,
            visible_until=visible_until,
            max_receive_count=self.max_receive_count,
        )

    def delete(self, messages: Sequence[Message]) -> list[Message]:
        failed: list[Message] = []
        for part in chunks(messages):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(part)
            ]
            with calling(self._sqs, "DeleteMessageBatch", self.url):
                response = self._sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)
            failed.extend(part[int(f["Id"])] for f in response.get("Failed", []))
        return failed

    def change_visibility(self, entries: Sequence[tuple[Message, int]]) -> list[Message]:
        failed: list[Message] = []
        for part in chunks(entries):
            request: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                for i, (m, seconds) in enumerate(part)
            ]
            with calling(self._sqs, "ChangeMessageVisibilityBatch", self.url):
                response = self._sqs.change_message_visibility_batch(
                    QueueUrl=self.url, Entries=request
                )
            failed.extend(part[int(f["Id"])][0] for f in response.get("Failed", []))
        return failed

    def send_batch(self, messages: Sequence[Outgoing]) -> list[Outgoing]:
        return _send(self._sqs, self.url, messages)

    def send(self, body: str, attributes: Mapping[str, Any] | None = None) -> str:
        with calling(self._sqs, "SendMessage", self.url):
            response = self._sqs.send_message(
                QueueUrl=self.url, MessageBody=body, MessageAttributes=dict(attributes or {})
            )
        return str(response["MessageId"])

    def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
        if not self.dead_letter_url:
            return list(letters)
        fifo = self.dead_letter_url.endswith(".fifo")
        return self._send_each(self.dead_letter_url, letters, [_letter(x, fifo) for x in letters])

    def resend(self, resends: Sequence[Resend]) -> list[Resend]:
        fifo = self.url.endswith(".fifo")
        return self._send_each(
            self.url, resends, [_again(r, n, fifo) for n, r in enumerate(resends)]
        )

    def _send_each(self, url: str, items: Sequence[T], outgoing: list[Outgoing]) -> list[T]:
        """Sends outgoing[i] for items[i]; returns the items whose message SQS did not take."""
        try:
            failed = {id(m) for m in _send(self._sqs, url, outgoing)}
        except QUEUE_CALL_FAILED:
            return list(items)
        return [item for item, m in zip(items, outgoing, strict=True) if id(m) in failed]

    def depth(self) -> QueueDepth:
        return _depth(self._sqs, self.url)

    def dead_letter_depth(self) -> QueueDepth | None:
        return _depth(self._sqs, self.dead_letter_url) if self.dead_letter_url else None

    def purge(self) -> None:
        with calling(self._sqs, "PurgeQueue", self.url):
            self._sqs.purge_queue(QueueUrl=self.url)


class SqsService:
    """The SQS endpoint: queues by URL (their redrive policy read), creation, moves."""

    def __init__(self, sqs: SQSClient, queue_client: SQSClient | None = None) -> None:
        self._sqs = sqs  # for the calls made here: short timeouts suit them
        self._queue_client = queue_client or sqs  # for the queues' own calls (long polls)

    @property
    def endpoint(self) -> str:
        return str(self._sqs.meta.endpoint_url)

    def queue(self, url: str, dead_letter_url: str | None = None) -> SqsQueue:
        found, max_receives = self._redrive_policy(url)
        return SqsQueue(url, self._queue_client, dead_letter_url or found, max_receives)

    def _redrive_policy(self, url: str) -> tuple[str | None, int]:
        with calling(self._sqs, "GetQueueAttributes", url):
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
        policy = attributes.get("RedrivePolicy")
        if not policy:
            return None, 0
        parsed = json.loads(policy)
        name = str(parsed["deadLetterTargetArn"]).rsplit(":", 1)[-1]
        return self._url_of(name), int(parsed.get("maxReceiveCount", 0))

    def _url_of(self, name: str) -> str:
        with calling(self._sqs, "GetQueueUrl", name):
            return str(self._sqs.get_queue_url(QueueName=name)["QueueUrl"])

    def _arn(self, url: str) -> str:
        with calling(self._sqs, "GetQueueAttributes", url):
            attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attributes["Attributes"]["QueueArn"])

    def create(
        self,
        name: str,
        *,
        visibility_timeout: int = 30,
        max_receive_count: int = 5,
        retention_seconds: int = 1209600,
        kms_key_id: str | None = None,
    ) -> SqsQueue:
        fifo = name.endswith(".fifo")
        common: QueueAttributes = {"MessageRetentionPeriod": str(retention_seconds)}
        if fifo:
            common["FifoQueue"] = "true"
        if kms_key_id:
            common["KmsMasterKeyId"] = kms_key_id
        else:
            common["SqsManagedSseEnabled"] = "true"
        dead_letter = self._create_or_update(dead_letter_name(name), common)
        policy = {
            "deadLetterTargetArn": self._arn(dead_letter),
            "maxReceiveCount": str(max_receive_count),
        }
        attributes: QueueAttributes = {
            **common, "VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": json.dumps(policy),
        }  # fmt: skip
        url = self._create_or_update(name, attributes)
        return SqsQueue(url, self._queue_client, dead_letter, max_receive_count)

    def _create_or_update(self, name: str, attributes: QueueAttributes) -> str:
        try:
            with calling(self._sqs, "CreateQueue", name):
                return str(
                    self._sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
                )
        except QueueRefused as exc:
            text = str(exc)
            if "SqsManagedSseEnabled" in text or "InvalidAttributeName" in text:
                # Older SQS-compatible servers do not know server-side encryption attributes.
                plain: QueueAttributes = {
                    k: v for k, v in attributes.items() if "Sse" not in k and "Kms" not in k
                }
                return self._create_or_update(name, plain)
            if "QueueAlreadyExists" not in text and "QueueNameExists" not in text:
                raise
        url = self._url_of(name)
        mutable: QueueAttributes = {k: v for k, v in attributes.items() if k != "FifoQueue"}
        with calling(self._sqs, "SetQueueAttributes", url):
            self._sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
        return url

    def start_move(self, source_url: str, destination_url: str) -> str:
        source, destination = self._arn(source_url), self._arn(destination_url)
        with calling(self._sqs, "StartMessageMoveTask", source_url):
            response = self._sqs.start_message_move_task(
                SourceArn=source, DestinationArn=destination
            )
        return str(response.get("TaskHandle", ""))

    def move_status(self, source_url: str, handle: str) -> MoveTask:
        with calling(self._sqs, "ListMessageMoveTasks", source_url):
            tasks = self._sqs.list_message_move_tasks(
                SourceArn=self._arn(source_url), MaxResults=10
            ).get("Results", [])
        task = next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})
        return MoveTask(
            handle,
            str(task.get("Status", "UNKNOWN")),
            int(str(task.get("ApproximateNumberOfMessagesMoved", 0))),
        )


def _send(sqs: SQSClient, url: str, messages: Sequence[Outgoing]) -> list[Outgoing]:
    failed: list[Outgoing] = []
    for group in send_groups(messages):
        entries = [_entry(str(i), m) for i, m in enumerate(group)]
        with calling(sqs, "SendMessageBatch", url):
            response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        failed.extend(group[int(f["Id"])] for f in response.get("Failed", []))
    return failed


def _entry(entry_id: str, message: Outgoing) -> SendMessageBatchRequestEntryTypeDef:
    entry: SendMessageBatchRequestEntryTypeDef = {
        "Id": entry_id,
        "MessageBody": message.body,
        "MessageAttributes": dict(message.attributes),
    }
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
    if message.dedup_id is not None:
        entry["MessageDeduplicationId"] = message.dedup_id
    if message.delay_seconds:
        entry["DelaySeconds"] = message.delay_seconds
    return entry


def _letter(letter: DeadLetter, fifo: bool) -> Outgoing:
    group = dedup = None
    if fifo:
        group = letter.source.group_id or "dead-letter"
        dedup = uuid.uuid5(uuid.NAMESPACE_URL, letter.source.message_id + letter.body[:200]).hex
    return Outgoing(letter.body, dead_letter_attributes(letter), group, dedup)


def _again(resend: Resend, position: int, fifo: bool) -> Outgoing:
    source = resend.source
    if not fifo:
        delay = max(0, min(MAX_DELAY_SECONDS, resend.delay_seconds))
        return Outgoing(resend.body, resend.attributes, delay_seconds=delay)
    # FIFO: the source's group keeps its order; each part of one resend is its own message.
    group = source.group_id or "requeued"
    dedup = f"{source.message_id}-{source.receive_count}-{source.attempts}-{position}"[-128:]
    return Outgoing(resend.body, resend.attributes, group, dedup)


def _depth(sqs: SQSClient, url: str) -> QueueDepth:
    with calling(sqs, "GetQueueAttributes", url):
        found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(_DEPTH_ATTRIBUTES))
    attributes = found.get("Attributes", {})
    return QueueDepth(*(int(attributes.get(name, 0)) for name in _DEPTH_ATTRIBUTES))
