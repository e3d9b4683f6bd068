"""Decode stage: raw messages -> records, bad records, or an unreadable message.
A function, called by the write stage on its own thread."""

from __future__ import annotations

from ingest.pipeline.messages import DecodedMessage
from ingest.queues.base import Message
from producer import wire


def decode(
    message: Message, max_decoded_bytes: int = wire.DEFAULT_MAX_DECODED_BYTES
) -> DecodedMessage:
    """Never raises for bad input: every problem becomes a reason on the result."""
    decoded = DecodedMessage(message)
    try:
        items = wire.decode_message(
            message.body, message.attributes, max_decoded_bytes=max_decoded_bytes
        )
    except wire.WireError as exc:
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
