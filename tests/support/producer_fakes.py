"""A fake SQS client for the producer's unit tests: records every
SendMessageBatch call and can be scripted to fail."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import bson
from bson.raw_bson import RawBSONDocument

from producer import wire
from producer.buffer import Item

# A step decides one call's outcome: return a response dict, raise, or None for "all succeed".
Step = Callable[[str, list[dict[str, Any]]], dict[str, Any] | None]


class FakeSQS:
    def __init__(self, *steps: Step, unreachable: set[str] | None = None) -> None:
        self.steps = list(steps)
        self.unreachable = unreachable or set()
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []
        self.accepted: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None  # when set: calls wait for it

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.calls.append((QueueUrl, Entries))
            if QueueUrl in self.unreachable:
                raise ConnectionError(f"cannot connect to {QueueUrl}")
            step = self.steps.pop(0) if self.steps else None
        response = step(QueueUrl, Entries) if step else None
        if response is None:
            response = {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}
        failed = {f["Id"] for f in response["Failed"]}
        with self.lock:
            self.accepted.setdefault(QueueUrl, []).extend(
                e for e in Entries if e["Id"] not in failed
            )
        return response

    def records(self, url: str | None = None) -> list[wire.Record]:
        """Every record SQS accepted (on one queue, or all), decoded, in order."""
        with self.lock:
            entries = [e for u, es in self.accepted.items() if url in (None, u) for e in es]
        out: list[wire.Record] = []
        for entry in entries:
            for item in wire.decode_message(entry["MessageBody"], entry["MessageAttributes"]):
                assert isinstance(item, wire.Record), item
                # Documents as dicts, to compare with what was sent (format 2 is BSON).
                out.append(dataclasses.replace(item, document=_as_dict(item.document)))
        return out


def _as_dict(document: Any) -> dict[str, Any]:
    return bson.decode(document.raw) if isinstance(document, RawBSONDocument) else document


def fail_entries(count: int, *, sender_fault: bool = False, code: str = "InternalError") -> Step:
    """A step where the first `count` entries of the call fail."""

    def step(url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        bad = entries[:count]
        return {
            "Successful": [{"Id": e["Id"]} for e in entries[count:]],
            "Failed": [
                {"Id": e["Id"], "SenderFault": sender_fault, "Code": code, "Message": "nope"}
                for e in bad
            ],
        }

    return step


def raise_error(exc: Exception) -> Step:
    def step(url: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        raise exc

    return step


P = TypeVar("P", bound="Closable")


class Closable(Protocol):
    def close(self, timeout: float | None = ...) -> Any: ...


@contextlib.contextmanager
def stalled(fake: FakeSQS, producer: P) -> Iterator[P]:
    """Every SQS call of `fake` waits until its gate opens (at the latest when the
    block ends); the producer is closed after."""
    fake.gate = threading.Event()
    try:
        yield producer
    finally:
        fake.gate.set()
        producer.close()


def line_item(line: str, partition_key: str | None = None, id_key: str | None = None) -> Item:
    """A format-1 record as the buffer and the journal hold it."""
    return Item(line, "", len(line.encode("utf-8")), partition_key, id_key)


class DiskFillsUp:
    """os.write for files under `directory` takes `room` bytes in all, then fails with
    ENOSPC, cutting the write that reaches the limit short as a full disk does."""

    def __init__(self, directory: Path, room: int) -> None:
        self.directory = str(directory)
        self.room = room
        self.real = os.write

    def __call__(self, fd: int, data: Any) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(self.directory):
            return self.real(fd, data)
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.real(fd, bytes(data[: self.room]))
        self.room -= written
        return written
