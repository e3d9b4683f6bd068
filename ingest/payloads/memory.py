"""The payload seam in memory, for tests and for a Service built without S3."""

from __future__ import annotations

import threading

from ingest.errors import PayloadUnavailable
from ingest.payloads.base import PayloadRefused, refused_size, refused_text
from producer.wire import PayloadPointer


class MemoryPayloads:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.buckets: set[str] = set()
        self.down = False  # True: every call fails as an outage would
        self.deleted: list[PayloadPointer] = []
        self._lock = threading.Lock()

    def put(self, pointer: PayloadPointer, payload: bytes) -> None:
        with self._lock:
            self.buckets.add(pointer.bucket)
            self.objects[(pointer.bucket, pointer.key)] = payload

    def fetch(self, pointer: PayloadPointer, max_bytes: int) -> str:
        self._check_up()
        with self._lock:
            payload = self.objects.get((pointer.bucket, pointer.key))
        if payload is None:
            raise PayloadRefused(f"payload {pointer.url} is missing (NoSuchKey)")
        if len(payload) > max_bytes:
            raise refused_size(pointer, len(payload), max_bytes)
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise refused_text(pointer) from None

    def delete(self, pointer: PayloadPointer) -> None:
        self._check_up()
        with self._lock:
            self.objects.pop((pointer.bucket, pointer.key), None)
            self.deleted.append(pointer)

    def create_bucket(self, bucket: str) -> bool:
        self._check_up()
        with self._lock:
            new = bucket not in self.buckets
            self.buckets.add(bucket)
        return new

    def _check_up(self) -> None:
        if self.down:
            raise PayloadUnavailable("S3 (in memory) is down")
