"""What send() checks, with nothing sent: for a dry run of records (`ingest backfill
--dry-run`) that must be refused exactly as Producer would refuse them, by the same
code (the collection and document rules, the size against the message limit)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from . import wire
from .config import Config, with_environment
from .encode import Encoder
from .lifecycle import Closing
from .metrics import Stats


class RecordChecker(Closing):
    """Producer's API and checks; `send()` raises what Producer.send() would raise for
    the record, and otherwise counts it. No network, no journal, no thread."""

    def __init__(
        self,
        queue_url: str | Sequence[str] = "https://sqs.invalid/000000000000/check",
        **options: Any,
    ) -> None:
        urls = (queue_url,) if isinstance(queue_url, str) else tuple(queue_url)
        if "wire_format" in options:
            options["wire_format"] = str(options["wire_format"])  # 2 or "2"
        c = self.config = Config(queue_urls=urls, **with_environment(options))
        self._encoder = Encoder(
            c.wire_format, fifo=c.fifo, encoding=c.encoding, level=c.compression_level,
            payload_bucket=c.payload_bucket,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._count = 0

    def send(
        self, collection: str, document: Mapping[str, Any], *, partition_key: str | None = None
    ) -> Any:
        _, record_id = self._encoder.item(collection, document, partition_key, None)
        with self._lock:
            self._count += 1
        return record_id

    def send_operation(
        self, collection: str, operation: wire.Operation, *, partition_key: str | None = None
    ) -> Any:
        """An update or a delete, checked as Producer.update() and delete() check them."""
        self._encoder.operation(collection, operation, partition_key, None)
        with self._lock:
            self._count += 1
        return operation.id

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None

    def stats(self) -> Stats:
        """`accepted`: the records that passed; nothing is ever sent."""
        with self._lock:
            return Stats(accepted=self._count)
