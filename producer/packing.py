"""Pack record lines into SQS messages and messages into SendMessageBatch calls.

Sizes are what SQS counts: body bytes plus attribute names, types and values
(wire.attributes_size). With compression the packer guesses how many raw
bytes fit from the ratio it has seen so far, then checks the real size and
splits a message that came out too large."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from . import wire
from .buffer import Item

MAX_BATCH_ENTRIES: Final = 10
DEFAULT_GROUP: Final = "default"
# A message's decoded body stays well under the consumer's decompression-bomb guard.
MAX_RAW_BODY_BYTES: Final = 4 * 1024 * 1024
_INITIAL_RATIO: Final = 0.4  # compressed base64 bytes per raw byte, before any evidence
_SAFETY: Final = 0.9  # aim a little under the limit so few compressed messages need a split
# A chunk under this share of the budget joins the one before: with _SAFETY's 10% of
# room, the two still fit one message when the ratio estimate holds.
_TAIL_SHARE: Final = 0.1
_LEARN_SHARE: Final = 0.25  # messages at least this full teach the packer its ratio
# ...and no fuller than a packed message gets: a record alone past the budget (a
# 15 MB document of repeated text, say) says nothing about how records pack.
_LEARN_MAX: Final = 1 + _TAIL_SHARE


@dataclass(frozen=True, slots=True)
class Message:
    body: str
    attributes: dict[str, dict[str, str]]
    items: tuple[Item, ...]
    size: int  # body + attributes, as SQS counts toward its limits
    group_id: str | None = None  # FIFO only
    dedup_id: str | None = None  # FIFO only
    # A pointer message (producer/offload.py): where the body it stands in for was put.
    payload: wire.PayloadPointer | None = None


def attributes_overhead(encoding: str, record_count: int, version: str = wire.JSON_LINES) -> int:
    return wire.attributes_size(wire.message_attributes(encoding, record_count, version))


class Packer:
    def __init__(
        self,
        max_message_bytes: int,
        encoding: str = wire.IDENTITY,
        *,
        fifo: bool = False,
        level: int | None = None,
        version: str = wire.JSON_LINES,
    ) -> None:
        if encoding not in wire.ENCODINGS:
            raise ValueError(f"compression must be one of {wire.ENCODINGS}, got {encoding!r}")
        self.max_message_bytes = max_message_bytes
        self.encoding = encoding
        self.version = version  # what raw_budget plans for; items are packed in their own
        self.fifo = fifo
        self._level = level
        self.ratio = _plain_ratio(version) if encoding == wire.IDENTITY else _INITIAL_RATIO

    def raw_budget(self) -> int:
        """Raw record bytes the packer expects to fit in one message."""
        room = self.max_message_bytes - attributes_overhead(self.encoding, 99999, self.version)
        room -= wire.PARTITION_OVERHEAD
        if self.encoding == wire.IDENTITY:
            return int(room / _plain_ratio(self.version))
        return min(MAX_RAW_BODY_BYTES, int(room * _SAFETY / self.ratio))

    def pack(self, items: Sequence[Item]) -> list[Message]:
        messages: list[Message] = []
        for group in self._groups(items):
            for chunk in self._chunks(group):
                messages.extend(self._build(chunk))
        return messages

    def _groups(self, items: Sequence[Item]) -> Iterator[list[Item]]:
        # A message holds one format (a journal written before an upgrade holds the
        # other) and one partition key, standard queues too, so the consumer can keep
        # each key on one writer (its --partitioned mode).
        plain = not self.fifo and all(item.partition_key is None for item in items)
        kinds = {type(item.record) for item in items}
        if plain and len(kinds) == 1:
            yield list(items)
            return
        groups: dict[tuple[type, str | None], list[Item]] = {}
        for item in items:  # dicts keep first-seen order, and each group its own order
            groups.setdefault((type(item.record), item.partition_key), []).append(item)
        yield from groups.values()

    def _chunks(self, items: list[Item]) -> list[list[Item]]:
        # + 1: the newline that joins a line to the next (format 2 counts its framing)
        budget = self.raw_budget()
        chunks = list(wire.bounded_groups(items, lambda item: item.size + 1, budget))
        if self.encoding != wire.IDENTITY and len(chunks) > 1:
            # A take is a few budgets' worth, so the last chunk is often a few records: a
            # message of its own would cost a request for nothing. A compressed budget is
            # an estimate with room to spare (_SAFETY), and _build splits what overflows.
            tail = chunks[-1]
            if sum(item.size + 1 for item in tail) < budget * _TAIL_SHARE:
                chunks[-2].extend(chunks.pop())
        return chunks

    def _build(self, chunk: list[Item]) -> list[Message]:
        raw = self._raw(chunk)
        message = self._encode(raw, chunk, self.encoding)
        if message.size <= self.max_message_bytes:
            return [message]
        if len(chunk) > 1:  # the ratio guess was optimistic: halve and retry
            half = len(chunk) // 2
            return self._build(chunk[:half]) + self._build(chunk[half:])
        # One record past the packing budget travels alone (compressed when that is
        # smaller): the sender sends it as it is up to the queue's limit, through S3 past it.
        return [message]

    @staticmethod
    def _raw(chunk: list[Item]) -> str | bytes:
        if isinstance(chunk[0].record, bytes):
            records = [(i.collection, i.record, i.trace) for i in chunk]
            return wire.pack_bson(records, [i.operation for i in chunk])  # type: ignore[arg-type]
        return wire.join_lines(i.record for i in chunk)  # type: ignore[misc]

    def _body(self, raw: str | bytes, encoding: str) -> str:
        if isinstance(raw, bytes):
            return wire.bson_body(raw, encoding, self._level)
        return wire.compress_body(raw, encoding, self._level)

    def _encode(self, raw: str | bytes, chunk: list[Item], encoding: str) -> Message:
        body = self._body(raw, encoding)
        version = wire.BSON_RECORDS if isinstance(raw, bytes) else wire.JSON_LINES
        budget = self.raw_budget()
        if encoding != wire.IDENTITY and len(raw) >= budget * _LEARN_SHARE:
            # Learnt from full-size messages only: a few records compress far worse than
            # a budget's worth, and would keep the estimate (and every message) too small.
            if len(raw) <= budget * _LEARN_MAX:
                self.ratio = 0.7 * self.ratio + 0.3 * (len(body) / max(1, len(raw)))
            if len(body) >= len(raw) * _plain_ratio(version):
                encoding, body = wire.IDENTITY, self._body(raw, wire.IDENTITY)  # did not pay
        attributes = wire.message_attributes(encoding, len(chunk), version)
        if chunk[0].partition_key is not None and not self.fifo:
            attributes[wire.PARTITION_ATTRIBUTE] = wire.string_attribute(chunk[0].partition_key)
        size = (len(body) if body.isascii() else len(body.encode("utf-8"))) + wire.attributes_size(
            attributes
        )
        group, dedup = self._fifo_ids(chunk)
        return Message(body, attributes, tuple(chunk), size, group, dedup)

    def _fifo_ids(self, chunk: list[Item]) -> tuple[str | None, str | None]:
        if not self.fifo:
            return None, None
        digest = hashlib.sha256()
        for item in chunk:
            record = item.record if isinstance(item.record, bytes) else item.record.encode("utf-8")
            digest.update(item.id_key.encode("utf-8") if item.id_key else record)
            digest.update(b"\n")
        return chunk[0].partition_key or DEFAULT_GROUP, digest.hexdigest()


def _plain_ratio(version: str) -> float:
    """Body bytes sent per raw byte without compression: base64 makes 4/3 of format 2."""
    return 4 / 3 if version == wire.BSON_RECORDS else 1.0


def batches(
    messages: Sequence[Message], max_batch_bytes: int, max_entries: int = MAX_BATCH_ENTRIES
) -> Iterator[list[Message]]:
    """Group messages, in order, into SendMessageBatch calls within both limits."""
    return wire.bounded_groups(messages, lambda m: m.size, max_batch_bytes, max_entries)
