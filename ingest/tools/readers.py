"""Readers for `ingest backfill`: JSON Lines, CSV and mongodump BSON, plain or gzipped.

Every reader yields one item per source position (line, CSV row start line, or
BSON document index, 1-based): a SourceDocument or a BadLine. Positions only
grow, so a checkpoint is "the last position handed to SQS" per source file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from bson import json_util
from bson.errors import BSONError
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from ingest.errors import ReaderError

JSONL: Final = "jsonl"
CSV: Final = "csv"
BSON: Final = "bson"
_SUFFIXES: Final = {".jsonl": JSONL, ".ndjson": JSONL, ".json": JSONL, ".csv": CSV, ".bson": BSON}
# mongodump writes <collection>.metadata.json beside each <collection>.bson: not data.
_METADATA: Final = ".metadata.json"
_HEX_ID: Final = re.compile(r"^(?:ObjectId\()?([0-9a-fA-F]{24})\)?$")
_MAX_BSON_DOCUMENT: Final = 48 * 1024 * 1024  # mongodump documents are <= 16 MiB; beyond: corrupt


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    source_id: str  # stable name: relative to the backfill PATH (or --source-id)
    kind: str  # JSONL, CSV or BSON
    gzipped: bool

    @property
    def default_collection(self) -> str | None:
        """mongodump names each file after its collection."""
        if self.kind != BSON:
            return None
        name = self.path.name.removesuffix(".gz")
        return name.removesuffix(".bson")


@dataclass(frozen=True, slots=True)
class SourceDocument:
    position: int
    document: dict[str, Any] | RawBSONDocument  # BSON files: the bytes, not decoded


@dataclass(frozen=True, slots=True)
class BadLine:
    position: int
    reason: str
    text: str  # the raw input, so a collected bad line can be fixed and replayed


Item = SourceDocument | BadLine


def file_kind(path: Path) -> tuple[str, bool] | None:
    """(kind, gzipped) from the file name, or None for files backfill does not read."""
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    name = name.removesuffix(".gz")
    if name.endswith(_METADATA):
        return None
    kind = _SUFFIXES.get(Path(name).suffix)
    return (kind, gzipped) if kind else None


def discover(root: Path, source_id: str | None = None) -> list[SourceFile]:
    """The files under root (or root itself), in a stable order.

    A source id defaults to the path relative to root (the file name when root
    is a file), so moving the folder keeps the derived _ids."""
    if not root.exists():
        raise ReaderError(f"{root}: no such file or directory")
    if root.is_file():
        found = file_kind(root)
        if found is None:
            raise ReaderError(f"{root}: unknown format (expected .jsonl, .csv or .bson, maybe .gz)")
        return [SourceFile(root, source_id or root.name, *found)]
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        found = file_kind(path)
        if found is not None:
            relative = path.relative_to(root).as_posix()
            name = f"{source_id}/{relative}" if source_id else relative
            files.append(SourceFile(path, name, *found))
    if not files:
        raise ReaderError(f"{root}: no .jsonl, .csv or .bson files (plain or .gz) in it")
    return files


class _Counted(io.RawIOBase):
    """Counts the bytes read from the file on disk (compressed size for .gz), for progress."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], object]) -> None:
        self._raw = raw
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self._on_read(count)
        return int(count or 0)

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_binary(source: SourceFile, on_read: Callable[[int], object] | None = None) -> IO[bytes]:
    raw = _Counted(source.path.open("rb", buffering=0), on_read or _ignore)
    stream: IO[bytes] = io.BufferedReader(raw, buffer_size=1 << 20)
    if source.gzipped:
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


def _ignore(count: int) -> None:
    return None


def read(source: SourceFile, on_read: Callable[[int], object] | None = None) -> Iterator[Item]:
    readers = {JSONL: _read_jsonl, CSV: _read_csv, BSON: _read_bson}
    with open_binary(source, on_read) as stream:
        try:
            yield from readers[source.kind](stream)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            # A truncated or corrupt .gz: everything before was read; say where it stopped.
            yield BadLine(-1, f"file cannot be read further: {exc}", "")


# ---------------------------------------------------------------- JSON Lines


def parse_json_line(text: str) -> dict[str, Any]:
    """One line of (relaxed or canonical) MongoDB Extended JSON; raises ValueError."""
    obj = json.loads(text, object_hook=json_util.object_hook)
    if not isinstance(obj, dict):
        raise ValueError(f"a line must be a JSON object, got {type(obj).__name__}")
    return obj


def _read_jsonl(stream: IO[bytes]) -> Iterator[Item]:
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadLine(number, f"not UTF-8: {exc}", raw.decode("utf-8", "replace"))
            continue
        if not text.strip():
            continue
        try:
            yield SourceDocument(number, parse_json_line(text))
        except (ValueError, TypeError, BSONError, OverflowError, RecursionError) as exc:
            yield BadLine(number, f"not valid Extended JSON: {exc}", text.rstrip("\r\n"))


# ------------------------------------------------------------------------ CSV


def _read_csv(stream: IO[bytes]) -> Iterator[Item]:
    """CSV with a header row. Values stay strings (CSV has no types); empty cells
    are left out; an _id that is 24 hex digits (or ObjectId(...)) becomes an ObjectId."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except (csv.Error, UnicodeDecodeError) as exc:
        yield BadLine(1, f"header row cannot be read: {exc}", "")
        return
    if len(set(header)) != len(header) or not all(header):
        yield BadLine(1, "header has empty or repeated column names", ",".join(header))
        return
    yield from _csv_rows(reader, header)


def _csv_rows(reader: Any, header: list[str]) -> Iterator[Item]:
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            yield BadLine(start, f"CSV row cannot be parsed: {exc}", "")
            start = reader.line_num + 1
            continue
        position, start = start, reader.line_num + 1
        if not row:
            continue
        if len(row) != len(header):
            reason = f"row has {len(row)} fields, the header has {len(header)}"
            yield BadLine(position, reason, _csv_text(row))
            continue
        document: dict[str, Any] = {k: v for k, v in zip(header, row, strict=True) if v != ""}
        if isinstance(document.get("_id"), str) and (match := _HEX_ID.match(document["_id"])):
            document["_id"] = ObjectId(match.group(1))
        yield SourceDocument(position, document)


def _csv_text(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(row)
    return out.getvalue().rstrip("\r\n")


# ----------------------------------------------------------------------- BSON


def _read_bson(stream: IO[bytes]) -> Iterator[Item]:
    """mongodump's format: BSON documents back to back. A document that does not
    decode is reported alone; a broken length prefix ends the file (nothing after
    it can be found), and that is reported too."""
    for number in _counter():
        head = stream.read(4)
        if not head:
            return
        if len(head) < 4:
            yield BadLine(number, "file ends inside a document's length prefix", "")
            return
        (size,) = struct.unpack("<i", head)
        if not 5 <= size <= _MAX_BSON_DOCUMENT:
            yield BadLine(number, f"corrupt length prefix {size}; rest of the file unreadable", "")
            return
        body = stream.read(size - 4)
        if len(body) < size - 4:
            yield BadLine(number, "file ends inside a document (truncated dump)", "")
            return
        data = head + body
        try:
            # Handed on as bytes: the producer sends them as they are (format 2).
            yield SourceDocument(number, RawBSONDocument(data))
        except (BSONError, ValueError, OverflowError) as exc:
            yield BadLine(number, f"document is not valid BSON: {exc}", data[:200].hex())


def _counter() -> Iterator[int]:
    number = 0
    while True:
        number += 1
        yield number
