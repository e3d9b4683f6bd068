"""A producer for tests: the same API and the same checks as `Producer`, and nothing is
sent. It keeps what was sent, to assert on.

    from producer.testing import RecordingProducer

    producer = RecordingProducer()
    app = create_app(producer)
    app.test_client().post("/operations", json={"user_id": 7, "action": "login"})
    assert producer.documents("operations")[0]["action"] == "login"

With pytest, the fixture `recording_producer` gives one per test (registered by the
package's pytest plugin, producer.pytest_plugin). A record Producer would refuse
(a bad collection, a document that cannot be BSON, one too large for a message) raises
the same WireError here."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.objectid import ObjectId

from . import operations, wire
from .config import Config, with_environment
from .encode import Encoder
from .errors import ProducerClosed
from .lifecycle import AsyncClosing, Closing
from .metrics import Stats
from .tracing import traceparent_source


@dataclass(frozen=True, slots=True)
class Sent:
    """One record as the consumer would read it."""

    collection: str
    document: dict[str, Any]
    partition_key: str | None
    record_id: Any  # the document's _id
    trace: str | None = None  # the traceparent of the span it was sent in
    # An update or a delete (`document` is then what it travels as: its envelope).
    operation: wire.Operation | None = None


class RecordingProducer(Closing):
    def __init__(
        self,
        queue_url: str | Sequence[str] = "https://sqs.invalid/000000000000/test",
        **options: Any,
    ) -> None:
        keep = bool(options.pop("keep", True))
        urls = (queue_url,) if isinstance(queue_url, str) else tuple(queue_url)
        for ignored in ("sqs_client", "s3_client", "journal_dir", "on_error"):
            options.pop(ignored, None)  # accepted for the same signature as Producer
        if "wire_format" in options:
            options["wire_format"] = str(options["wire_format"])
        self.config = Config(queue_urls=urls, **with_environment(options))  # the same checks
        c = self.config
        self._encoder = Encoder(c.wire_format, fifo=c.fifo, encoding=c.encoding,
                                level=c.compression_level, payload_bucket=c.payload_bucket)  # fmt: skip
        self._traceparent = traceparent_source()
        self._lock = threading.Lock()
        self.sent: list[Sent] = []
        self._keep = keep  # False: check and count only (a dry run of a large input)
        self._count = 0
        self._closed = False

    def send(
        self, collection: str, document: Mapping[str, Any], *, partition_key: str | None = None
    ) -> Any:
        self._check_open()
        trace = self._traceparent() if self._traceparent is not None else None
        item, record_id = self._encoder.item(collection, document, partition_key, trace)
        self._keep_sent(item, partition_key, record_id, trace, None)
        return record_id

    def update(
        self,
        collection: str,
        _id: Any,
        update: Mapping[str, Any],
        *,
        version: Any = None,
        ordered: bool | None = None,
        partition_key: str | None = None,
    ) -> ObjectId:
        """Producer.update's checks, kept in `sent` (and `operations()`)."""
        self._check_open()
        operation = operations.update(_id, update, version, ordered)
        return self._operation(collection, operation, partition_key)

    def delete(
        self, collection: str, _id: Any, *, version: Any = None, partition_key: str | None = None
    ) -> ObjectId:
        self._check_open()
        return self._operation(collection, operations.delete(_id, version), partition_key)

    def send_operation(
        self, collection: str, operation: wire.Operation, *, partition_key: str | None = None
    ) -> ObjectId:
        self._check_open()
        return self._operation(collection, operation, partition_key)

    def _operation(
        self, collection: str, operation: wire.Operation, partition_key: str | None
    ) -> ObjectId:
        trace = self._traceparent() if self._traceparent is not None else None
        item = self._encoder.operation(collection, operation, partition_key, trace)
        self._keep_sent(item, partition_key, operation.target, trace, operation)
        return operation.id

    def _check_open(self) -> None:
        if self._closed:
            raise ProducerClosed("send() after close()")

    def _keep_sent(
        self,
        item: Any,
        partition_key: str | None,
        record_id: Any,
        trace: str | None,
        operation: wire.Operation | None,
    ) -> None:
        with self._lock:
            self._count += 1
        if not self._keep:
            return
        if isinstance(item.record, bytes):
            stored = bson.decode(item.record)
        else:
            record = wire.decode_line(item.record)
            stored = dict(record.document)
        sent = Sent(item.collection, stored, partition_key, record_id, trace, operation)
        with self._lock:
            self.sent.append(sent)

    def documents(self, collection: str | None = None) -> list[dict[str, Any]]:
        """The documents sent with send() (to one collection, or all), in order."""
        with self._lock:
            return [
                s.document
                for s in self.sent
                if collection in (None, s.collection) and s.operation is None
            ]

    def operations(self, collection: str | None = None) -> list[wire.Operation]:
        """The updates and deletes (of one collection, or all), in order."""
        with self._lock:
            return [
                s.operation
                for s in self.sent
                if collection in (None, s.collection) and s.operation is not None
            ]

    def clear(self) -> None:
        with self._lock:
            self.sent.clear()
            self._count = 0

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> Stats:
        with self._lock:
            return Stats(accepted=self._count, sent=self._count)


class AsyncRecordingProducer(AsyncClosing, RecordingProducer):
    """RecordingProducer with AsyncProducer's awaitable flush() and close()."""

    async def flush(self, timeout: float | None = None) -> bool:  # type: ignore[override]
        return True

    async def close(self, timeout: float | None = None) -> None:  # type: ignore[override]
        self._closed = True


__all__ = ["AsyncRecordingProducer", "RecordingProducer", "Sent"]
