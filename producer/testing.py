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

from . import wire
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
    record_id: Any
    trace: str | None = None  # the traceparent of the span it was sent in


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
        if self._closed:
            raise ProducerClosed("send() after close()")
        trace = self._traceparent() if self._traceparent is not None else None
        item, record_id = self._encoder.item(collection, document, partition_key, trace)
        with self._lock:
            self._count += 1
        if not self._keep:
            return record_id
        if isinstance(item.record, bytes):
            stored = bson.decode(item.record)
        else:
            record = wire.decode_line(item.record)
            stored = dict(record.document)
        with self._lock:
            self.sent.append(Sent(collection, stored, partition_key, record_id, trace))
        return record_id

    def documents(self, collection: str | None = None) -> list[dict[str, Any]]:
        """The documents sent (to one collection, or all), in order."""
        with self._lock:
            return [s.document for s in self.sent if collection in (None, s.collection)]

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
