"""Whole message bodies: the format version and encoding from the attributes, and the
records inside."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .attributes import ENCODING_ATTRIBUTE, FORMAT_ATTRIBUTE, FORMAT_VERSION, attribute_value
from .compression import DEFAULT_MAX_DECODED_BYTES, IDENTITY, compress, decompress
from .errors import WireError
from .jsonlines import iter_records
from .records import BadRecord, Record


def compress_body(text: str, encoding: str, level: int | None = None) -> str:
    """A JSON Lines body in `encoding` (identity: the text itself)."""
    if encoding == IDENTITY:
        return text
    return compress(text.encode("utf-8"), encoding, level)


def decode_body(
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> str:
    """Check the format version and undo the encoding: returns JSON Lines text.

    Raises WireError when the whole message is unreadable."""
    version = attribute_value(attributes, FORMAT_ATTRIBUTE)
    if version is not None and version != FORMAT_VERSION:
        raise WireError(f"unknown format version {version[:40]!r} (this consumer reads '1')")
    encoding = attribute_value(attributes, ENCODING_ATTRIBUTE) or IDENTITY
    if encoding == IDENTITY:
        if len(body) > max_decoded_bytes:
            raise WireError(f"body is larger than {max_decoded_bytes} bytes")
        return body
    raw = decompress(body, encoding, max_decoded_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"decompressed body is not valid UTF-8: {exc}") from exc


def decode_message(
    body: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> list[Record | BadRecord]:
    """Decode a whole message. Raises WireError if nothing in it is readable."""
    text = decode_body(body, attributes, max_decoded_bytes=max_decoded_bytes)
    items = list(iter_records(text))
    if not items:
        raise WireError("message holds no records")
    return items
