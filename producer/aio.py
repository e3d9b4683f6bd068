"""AsyncProducer: the Producer for asyncio apps. send() stays synchronous and
non-blocking; flush() and close() wait in a worker thread, not on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from bson.objectid import ObjectId

from .core import Producer
from .lifecycle import AsyncClosing
from .metrics import Stats


class AsyncProducer(AsyncClosing):
    def __init__(self, queue_url: str | Sequence[str], **kwargs: Any) -> None:
        if kwargs.get("overflow") == "block":
            raise ValueError(
                'overflow="block" would stall the event loop; use "journal" or "raise"'
            )
        self.producer = Producer(queue_url, **kwargs)

    def send(
        self, collection: str, document: dict[str, Any], *, partition_key: str | None = None
    ) -> Any:
        return self.producer.send(collection, document, partition_key=partition_key)

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
        return self.producer.update(
            collection, _id, update, version=version, ordered=ordered, partition_key=partition_key
        )

    def delete(
        self, collection: str, _id: Any, *, version: Any = None, partition_key: str | None = None
    ) -> ObjectId:
        return self.producer.delete(collection, _id, version=version, partition_key=partition_key)

    async def flush(self, timeout: float | None = None) -> bool:
        return await asyncio.to_thread(self.producer.flush, timeout)

    async def close(self, timeout: float | None = 10.0) -> None:
        await asyncio.to_thread(self.producer.close, timeout)

    def stats(self) -> Stats:
        return self.producer.stats()
