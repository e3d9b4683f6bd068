"""Decode stage: raw messages -> records, bad records, or an unreadable message.
A function, called by the write stage on its own thread.

A message whose body is kept in S3 (a pointer, in the format of AWS's extended clients:
producer/wire/pointers.py) is decoded from its payload, fetched here. A payload that
cannot be had makes the message unreadable, with the reason (it is dead-lettered as it
came, pointer and all); S3 not answering raises PayloadUnavailable, for the write stage
to hand the message back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ingest.payloads.base import PayloadRefused, PayloadStore
from ingest.pipeline.messages import DecodedMessage
from ingest.queues.base import Message
from producer import wire

# A payload's text is at most base64 of what a body may decode to, and a little more.
_BASE64_SLACK = 4096


def decode(
    message: Message,
    max_decoded_bytes: int = wire.DEFAULT_MAX_DECODED_BYTES,
    payloads: PayloadStore | None = None,
) -> DecodedMessage:
    """Never raises for bad input: every problem becomes a reason on the result.
    Raises PayloadUnavailable when the payload store does not answer."""
    decoded = DecodedMessage(message)
    try:
        body, attributes = _body(message, max_decoded_bytes, payloads)
        items = wire.decode_message(
            body, attributes, max_decoded_bytes=max_decoded_bytes, sent_at=message.sent_at
        )
    except (wire.WireError, PayloadRefused) as exc:
        decoded.error = str(exc)
        return decoded
    for item in items:
        if isinstance(item, wire.Record):
            decoded.records.append(item)
        else:
            decoded.bad_records.append(item)
    if not decoded.records and len(decoded.bad_records) == 1 and len(items) == 1:
        # A one-record message whose record is bad: dead-letter the message as it came.
        decoded.error = decoded.bad_records[0].reason
        decoded.bad_records.clear()
    return decoded


def _body(
    message: Message, max_decoded_bytes: int, payloads: PayloadStore | None
) -> tuple[str, Mapping[str, Any]]:
    """The message's body and attributes, or its payload's and the attributes it is
    read with, when the body is a pointer."""
    if not wire.is_pointer(message.attributes):
        return message.body, message.attributes
    pointer = wire.parse_pointer(message.body)
    if payloads is None:
        raise PayloadRefused(f"payload {pointer.url}: this consumer has no payload store")
    limit = max_decoded_bytes * 4 // 3 + _BASE64_SLACK
    payload = payloads.fetch(pointer, limit)
    return payload, wire.payload_attributes(message.attributes)
