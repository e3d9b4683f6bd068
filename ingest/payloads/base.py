"""The payload seam's protocol (see ingest/payloads/__init__.py).

A fetch fails in one of two ways, told apart by what the store did:
- it answered that this object cannot be had (missing, refused, too large, not text):
  PayloadRefused, with the reason: the record is a bad one, dead-lettered with it;
- it did not answer (or answered "later": 5xx, throttling): PayloadUnavailable (from
  ingest.errors), an outage: the message is handed back, and no attempt is counted."""

from __future__ import annotations

from typing import Protocol

from producer.wire import PayloadPointer


class PayloadRefused(Exception):
    """The store answered: this payload cannot be had. The text is the reason."""


class PayloadStore(Protocol):
    def fetch(self, pointer: PayloadPointer, max_bytes: int) -> str:
        """The payload as text. Raises PayloadRefused or PayloadUnavailable."""
        ...

    def delete(self, pointer: PayloadPointer) -> None:
        """Deletes the object (a missing one is no error). Raises PayloadUnavailable."""
        ...

    def create_bucket(self, bucket: str) -> bool:
        """Creates the bucket; False when it was there already. Raises PayloadUnavailable,
        or ConfigError when the store refuses (a name taken by another account)."""
        ...


def refused_size(pointer: PayloadPointer, size: int, max_bytes: int) -> PayloadRefused:
    return PayloadRefused(
        f"payload {pointer.url} is {size} bytes; a message body may be at most {max_bytes}"
        " bytes here (INGEST_MAX_DECODED_BYTES of records, in base64)"
    )


def refused_text(pointer: PayloadPointer) -> PayloadRefused:
    return PayloadRefused(f"payload {pointer.url} is not UTF-8 text (not a message body)")
