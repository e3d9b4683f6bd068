"""A record as it travels: checked and encoded on the caller's thread, in the format
the producer writes. Producer.send and producer.testing share this, so that a test
double refuses exactly what the real producer refuses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from bson.objectid import ObjectId

from . import wire
from .batcher import Item
from .errors import RecordTooLarge, WireError

_GROUP_ID: Final = re.compile(r"[!-~]{1,128}")  # what SQS accepts as a MessageGroupId
_LONG_NUMBER: Final = re.compile(r"\d{19}")  # an integer that may not fit 64 bits


class Encoder:
    """Checks and encodes records for messages of `max_message_bytes` in `version`."""

    def __init__(
        self,
        version: str,
        max_message_bytes: int,
        *,
        fifo: bool = False,
        encoding: str = wire.IDENTITY,
        level: int | None = None,
    ) -> None:
        self.version = version
        self.fifo = fifo
        self._max_message_bytes = max_message_bytes
        self._encoding, self._level = encoding, level
        self._room = wire.single_record_limit(max_message_bytes, wire.JSON_LINES)

    def item(
        self,
        collection: str,
        document: Mapping[str, Any],
        partition_key: str | None = None,
        trace: str | None = None,
    ) -> tuple[Item, Any]:
        """The record as an Item, and its _id. Stamps document["_id"] with a new
        ObjectId if absent (like pymongo's insert_one). Raises WireError (RecordTooLarge
        when it cannot fit one message)."""
        wire.known_collection(collection)  # checked once per name, as the consumer does
        if partition_key is not None and not _GROUP_ID.fullmatch(str(partition_key)):
            # Checked here: one bad key in a packed batch would fail the whole SQS call.
            raise WireError("partition_key must be 1-128 printable ASCII characters, no spaces")
        if not isinstance(document, Mapping):
            raise WireError(f"document must be a dict, got {type(document).__name__}")
        if "_id" not in document:
            if not isinstance(document, dict):
                raise WireError("document has no _id, and it is not a dict one can be added to")
            document["_id"] = ObjectId()
        record_id = document["_id"]
        if self.version == wire.BSON_RECORDS:
            raw = wire.encode_document(document)
            record: str | bytes = raw
            size = len(raw) + wire.framing_bytes(collection, trace)
            limit = self._limit(partition_key)
            if -(-size // 3) * 4 > limit:  # does not fit uncompressed (base64: 4 bytes for 3)
                self._check_compressed_fits(collection, raw, trace, limit)
        else:
            record = self._json_line(collection, document, trace)
            size = len(record) if record.isascii() else len(record.encode("utf-8"))
            self._check_size(size, partition_key)
        id_key = f"{type(record_id).__name__}:{record_id}" if self.fifo else None
        return Item(record, collection, size, partition_key, id_key, trace), record_id

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
        self, collection: str, document: bytes, trace: str | None, limit: int
    ) -> None:
        """A record too large for a message uncompressed must fit one compressed."""
        if self._encoding != wire.IDENTITY:
            body = wire.bson_body(
                wire.pack_bson([(collection, document, trace)]), self._encoding, self._level
            )
            if len(body) <= limit:
                return  # the packer sends it alone, compressed
        raise RecordTooLarge(
            f"record is {len(document)} bytes as BSON; one message holds at most {limit * 3 // 4} "
            f"bytes of records before compression (max_message_bytes={self._max_message_bytes} "
            "minus attributes, base64)"
        )

    def _check_size(self, size: int, partition_key: str | None) -> None:
        limit = self._limit(partition_key)
        if size > limit:
            raise RecordTooLarge(
                f"record is {size} bytes encoded; one message holds at most {limit} bytes "
                f"of records (max_message_bytes={self._max_message_bytes} minus attributes)"
            )
