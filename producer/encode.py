"""A record as it travels: checked and encoded on the caller's thread, in the format
the producer writes. Producer.send and producer.testing share this, so that a test
double refuses exactly what the real producer refuses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from bson.objectid import ObjectId

from . import wire
from .buffer import Item
from .config import SQS_MAX_MESSAGE_BYTES
from .errors import RecordRefused, RecordTooLarge, WireError

_GROUP_ID: Final = re.compile(r"[!-~]{1,128}")  # what SQS accepts as a MessageGroupId
_LONG_NUMBER: Final = re.compile(r"\d{19}")  # an integer that may not fit 64 bits


class Encoder:
    """Checks and encodes records in `version`. A record travels packed with others, or
    alone when it is past the packing budget, up to what one SQS message holds; past
    that it goes through S3 when the producer has a payload bucket, up to MongoDB's
    16 MiB, and is refused here when it has none."""

    def __init__(
        self,
        version: str,
        *,
        fifo: bool = False,
        encoding: str = wire.IDENTITY,
        level: int | None = None,
        payload_bucket: str | None = None,
    ) -> None:
        self.version = version
        self.fifo = fifo
        self._encoding, self._level = encoding, level
        self._payload_bucket = payload_bucket
        self._room = wire.single_record_limit(SQS_MAX_MESSAGE_BYTES, wire.JSON_LINES)

    def item(
        self,
        collection: str,
        document: Mapping[str, Any],
        partition_key: str | None = None,
        trace: str | None = None,
    ) -> tuple[Item, Any]:
        """The record as an Item, and its _id. Stamps document["_id"] with a new
        ObjectId if absent (like pymongo's insert_one). Raises RecordRefused
        (RecordTooLarge when it is too large for one message and there is no payload
        bucket): the format's WireError, as the producer's own error."""
        try:  # free on the hot path, unlike a context manager
            return self._item(collection, document, partition_key, trace)
        except WireError as exc:
            raise _refused(exc) from None

    def _item(
        self,
        collection: str,
        document: Mapping[str, Any],
        partition_key: str | None,
        trace: str | None,
    ) -> tuple[Item, Any]:
        self._check_route(collection, partition_key)
        if not isinstance(document, Mapping):
            raise WireError(f"document must be a dict, got {type(document).__name__}")
        # None counts as absent: a model dumped with `_id: None` means "no id yet", and
        # kept, every such record would collapse into MongoDB's one null _id.
        if document.get("_id") is None:
            if not isinstance(document, dict):
                raise WireError("document has no _id, and it is not a dict one can be added to")
            document["_id"] = ObjectId()
        record_id = document["_id"]
        if self.version == wire.BSON_RECORDS:
            record: str | bytes = self._bson(collection, document, partition_key, trace)
        else:
            record = self._json_line(collection, document, trace)
        size = self._size(record, collection, trace)
        if isinstance(record, str) and size > self._limit(partition_key):
            self._check_offloadable(size, document, partition_key)
        id_key = f"{type(record_id).__name__}:{record_id}" if self.fifo else None
        return Item(record, collection, size, partition_key, id_key, trace), record_id

    def operation(
        self,
        collection: str,
        operation: wire.Operation,
        partition_key: str | None = None,
        trace: str | None = None,
    ) -> Item:
        """An update or a delete as an Item (its envelope, in the producer's format).
        Raises RecordRefused, as item() does."""
        try:
            return self._operation(collection, operation, partition_key, trace)
        except WireError as exc:
            raise _refused(exc) from None

    def _operation(
        self,
        collection: str,
        operation: wire.Operation,
        partition_key: str | None,
        trace: str | None,
    ) -> Item:
        self._check_route(collection, partition_key)
        envelope = wire.envelope(operation)
        if self.version == wire.BSON_RECORDS:
            record: str | bytes = self._bson(
                collection, envelope, partition_key, trace, operation=True
            )
        else:
            record = wire.encode_operation(collection, envelope, trace)
            if _LONG_NUMBER.search(record) or len(record) > self._limit(partition_key):
                wire.encode_document(envelope)  # 64-bit integers and MongoDB's 16 MiB
        size = self._size(record, collection, trace)
        if isinstance(record, str) and size > self._limit(partition_key):
            self._check_offloadable(size, envelope, partition_key)
        # FIFO deduplication by the operation's id: two updates of one _id are two records.
        id_key = f"op:{operation.id}" if self.fifo else None
        return Item(
            record, collection, size, partition_key, id_key, trace, isinstance(record, bytes)
        )

    @staticmethod
    def _check_route(collection: str, partition_key: str | None) -> None:
        wire.known_collection(collection)  # checked once per name, as the consumer does
        if partition_key is not None and not _GROUP_ID.fullmatch(str(partition_key)):
            # Checked here: one bad key in a packed batch would fail the whole SQS call.
            raise WireError("partition_key must be 1-128 printable ASCII characters, no spaces")

    def _bson(
        self,
        collection: str,
        document: Mapping[str, Any],
        partition_key: str | None,
        trace: str | None,
        *,
        operation: bool = False,
    ) -> bytes:
        raw = wire.encode_document(document)  # refuses a document past MongoDB's 16 MiB
        size = len(raw) + wire.framing_bytes(collection, trace)
        limit = self._limit(partition_key)
        if -(-size // 3) * 4 > limit and self._payload_bucket is None:
            # Past one message uncompressed (base64: 4 bytes for 3): it must fit compressed.
            self._check_compressed_fits(collection, raw, trace, limit, operation)
        return raw

    @staticmethod
    def _size(record: str | bytes, collection: str, trace: str | None) -> int:
        if isinstance(record, bytes):
            return len(record) + wire.framing_bytes(collection, trace)
        return len(record) if record.isascii() else len(record.encode("utf-8"))

    @staticmethod
    def _json_line(collection: str, document: Mapping[str, Any], trace: str | None) -> str:
        for key in document:  # JSON would turn any key into text; BSON keys are text
            if not isinstance(key, str):
                raise WireError(f"document keys must be strings, got {type(key).__name__}")
        wire.check_document(document)
        line = wire.encode_record(collection, document, trace)
        if _LONG_NUMBER.search(line):  # JSON holds any integer; MongoDB only 64-bit ones
            try:
                wire.encode_document(document)
            except WireError as exc:
                raise WireError(str(exc)) from None
        return line

    def _limit(self, partition_key: str | None) -> int:
        """Bytes of body a message holding one record has room for."""
        if partition_key is not None and not self.fifo:
            return self._room - wire.PARTITION_OVERHEAD  # the key travels as an attribute
        return self._room

    def _check_compressed_fits(
        self, collection: str, document: bytes, trace: str | None, limit: int, operation: bool
    ) -> None:
        """A record too large for a message uncompressed must fit one compressed."""
        if self._encoding != wire.IDENTITY:
            raw = wire.pack_bson([(collection, document, trace)], [operation])
            body = wire.bson_body(raw, self._encoding, self._level)
            if len(body) <= limit:
                return  # the packer sends it alone, compressed
        raise RecordTooLarge(
            f"record is {len(document)} bytes as BSON; one SQS message holds at most "
            f"{limit * 3 // 4} bytes of records before compression (SQS's "
            f"{SQS_MAX_MESSAGE_BYTES} minus attributes, base64): {_OFFLOAD_HINT}"
        )

    def _check_offloadable(
        self, size: int, document: Mapping[str, Any], partition_key: str | None
    ) -> None:
        """Format 1: a line too long for one message goes through S3, within MongoDB's limit."""
        if self._payload_bucket is None:
            raise RecordTooLarge(
                f"record is {size} bytes encoded; one SQS message holds at most "
                f"{self._limit(partition_key)} bytes of records (SQS's {SQS_MAX_MESSAGE_BYTES} "
                f"minus attributes): {_OFFLOAD_HINT}"
            )
        wire.encode_document(document)  # the 16 MiB the consumer would refuse it past


_OFFLOAD_HINT: Final = (
    "set payload_bucket (or INGEST_PAYLOAD_BUCKET) to send larger records through S3"
)


def _refused(exc: WireError) -> RecordRefused:
    """The format's WireError as the producer's RecordRefused (which is both)."""
    return exc if isinstance(exc, RecordRefused) else RecordRefused(str(exc))
