"""Body encodings: identity, gzip or zstd, compressed bodies as base64 text (an SQS body
must be valid XML characters), and the guards against compression bombs."""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import zlib
from typing import Any, Final

from .errors import WireError

IDENTITY: Final = "identity"
GZIP: Final = "gzip"
ZSTD: Final = "zstd"
_CHUNK: Final = 256 * 1024
ENCODINGS: Final = (IDENTITY, GZIP, ZSTD)
#: Guard against compression bombs: a body may not inflate past this.
DEFAULT_MAX_DECODED_BYTES: Final = 32 * 1024 * 1024


def compress(raw: bytes, encoding: str, level: int | None = None) -> str:
    """Compress `raw` and return it as base64 text."""
    if encoding == GZIP:
        packed = gzip.compress(raw, compresslevel=6 if level is None else level, mtime=0)
    elif encoding == ZSTD:
        packed = _zstd().ZstdCompressor(level=3 if level is None else level).compress(raw)
    else:
        raise WireError(f"unknown encoding {encoding!r}")
    return base64.b64encode(packed).decode("ascii")


def decompress(body: str, encoding: str, max_decoded_bytes: int) -> bytes:
    """Undo `compress`. Raises WireError for an unknown encoding, bad base64, a
    truncated or corrupt frame, or one that inflates past `max_decoded_bytes`."""
    if encoding not in (GZIP, ZSTD):
        raise WireError(f"unknown encoding {encoding[:40]!r}")
    try:
        packed = base64.b64decode(body.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise WireError(f"{encoding} body is not valid base64: {exc}") from exc
    return _inflate(packed, encoding, max_decoded_bytes)


def _inflate(packed: bytes, encoding: str, limit: int) -> bytes:
    try:
        if encoding == GZIP:
            inflater = zlib.decompressobj(wbits=31)
            raw = inflater.decompress(packed, limit + 1)
            if len(raw) > limit:
                raise WireError(f"gzip body inflates past {limit} bytes (compression bomb?)")
            if not inflater.eof:
                raise WireError("gzip body is truncated")
            return raw
        return _inflate_zstd(packed, limit)
    except WireError:
        raise
    except Exception as exc:  # zlib.error, zstandard.ZstdError
        raise WireError(f"{encoding} body cannot be decompressed: {exc}") from exc


def _inflate_zstd(packed: bytes, limit: int) -> bytes:
    zstd = _zstd()
    declared = zstd.frame_content_size(packed)
    if declared > limit:
        raise WireError(f"zstd body declares {declared} bytes, over {limit} (compression bomb?)")
    if declared > 0:
        # The frame says its size (every producer here writes it): one buffer of that
        # size, and zstd itself refuses a frame whose content runs past it.
        raw: bytes = zstd.ZstdDecompressor().decompress(packed)
        if len(raw) != declared:
            raise WireError("zstd body is truncated")
        return raw
    return _inflate_zstd_streamed(zstd, packed, limit)


def _inflate_zstd_streamed(zstd: Any, packed: bytes, limit: int) -> bytes:
    """A frame without a declared size (a streaming writer's): read in chunks, capped, so
    a bomb stops at `limit` (one read of `limit` bytes would allocate that much each time)."""
    chunks: list[bytes] = []
    total = 0
    with zstd.ZstdDecompressor().stream_reader(io.BytesIO(packed)) as reader:
        while chunk := reader.read(min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise WireError(f"zstd body inflates past {limit} bytes (compression bomb?)")
    if not _zstd_frame_ends(packed):
        raise WireError("zstd body is truncated")
    return b"".join(chunks)


def _zstd_frame_ends(packed: bytes) -> bool:
    reader = _zstd().ZstdDecompressor().decompressobj()
    reader.decompress(packed)  # safe: the capped read above already bounded the output
    return bool(reader.eof)


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise WireError("zstd encoding needs the 'zstandard' package") from exc
    return zstandard
