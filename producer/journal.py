"""The journal: append-only segment files that hold records SQS could not take.

A segment is a file ``<time_ns>-<pid>-<seq>-<destination>.seg`` of lines
``<json [partition_key, id_key]> TAB <record line>``. Names sort in write order; the
destination (a hash of the producer's queue URLs) keeps producers of different queues
that share a directory from replaying each other's records into the wrong queue.
Whoever writes or replays a segment holds an exclusive flock on it, so several
processes (gunicorn workers) can share one directory: a writer creates its
segment under a hidden temporary name, locks it, then renames it into place,
so a replayer can never grab a segment before its writer does. A replayer
records its progress in ``<segment>.pos`` and deletes the segment only after
every record in it was sent; a crash mid-replay re-sends at most the records
since the last progress mark (the consumer de-duplicates by _id).

Durability (``fsync``): "always" fsyncs after each append (a batch of records),
so a journaled record survives a power cut; "never" leaves that to the OS page
cache, which survives a process crash but not a machine crash.

A write that fails part way (the disk is full) keeps the whole lines that made it,
cuts off the torn one, and says how many records it kept (JournalWriteError.written):
those are journaled and will be replayed; only the rest are lost.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from . import wire
from .buffer import Item, as_json

log = logging.getLogger("producer.journal")

SEGMENT_SUFFIX: Final = ".seg"
REJECTED_FILE: Final = "rejected.jsonl"
FSYNC_POLICIES: Final = ("always", "never")
DEFAULT_SEGMENT_BYTES: Final = 16 * 1024 * 1024
OPERATION_MARK: Final = "operation"  # a format-2 entry's fifth header field


def destination_of(queue_urls: Sequence[str]) -> str:
    """A short name for where a producer sends: its segments carry it, so a journal_dir
    shared by producers of different queues replays each record to its own queue."""
    return hashlib.sha256("\n".join(queue_urls).encode()).hexdigest()[:12]


def default_journal_dir(queue_urls: Sequence[str]) -> Path:
    """$XDG_STATE_HOME (or ~/.local/state)/sqs-mongo-ingest/journal/<hash of the queue urls>."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "sqs-mongo-ingest" / "journal" / destination_of(queue_urls)


def encode_entry(item: Item) -> str:
    """`<header>TAB<record>`: header [partition key, id key] and the JSON line (format 1),
    or [partition key, id key, collection, trace] and the BSON document in base64 (2),
    with a fifth field, "operation", for an update or a delete's envelope."""
    if isinstance(item.record, bytes):
        fields = [item.partition_key, item.id_key, item.collection, item.trace]
        if item.operation:
            fields.append(OPERATION_MARK)
        record = base64.b64encode(item.record).decode("ascii")
    else:
        fields, record = [item.partition_key, item.id_key], item.record
    header = json.dumps(fields, separators=(",", ":"))
    return f"{header}\t{record}\n"  # JSON never holds a raw tab or newline


def decode_entry(text: str) -> Item:
    header, record = text.rstrip("\n").split("\t", 1)
    fields = json.loads(header)
    if not isinstance(fields, list) or len(fields) not in (2, 4, 5):
        raise ValueError("bad journal entry header")
    if not all(field is None or isinstance(field, str) for field in fields):
        raise ValueError("bad journal entry header")
    if len(fields) == 2:
        size = len(record) if record.isascii() else len(record.encode("utf-8"))
        return Item(record, "", size, fields[0], fields[1])
    operation = len(fields) == 5
    if operation and fields[4] != OPERATION_MARK:
        raise ValueError("bad journal entry header")
    key, id_key, collection, trace = fields[:4]
    if not collection:
        raise ValueError("bad journal entry header")
    document = base64.b64decode(record.encode("ascii"), validate=True)
    size = len(document) + wire.framing_bytes(collection, trace)
    return Item(document, collection, size, key, id_key, trace, operation)


class JournalWriteError(Exception):
    """An append failed part way: the first `written` records are whole lines in the
    journal (they will be replayed); the others are not in it."""

    def __init__(self, error: OSError, written: int) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error
        self.written = written


class Journal:
    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: str = "always",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        destination: str = "",
    ) -> None:
        """`destination`: destination_of(the producer's queue URLs); "" for a view of
        every segment (an inspection, or a journal only one producer uses)."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"journal_fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync == "always"
        self.segment_bytes = segment_bytes
        self.destination = destination
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._seq = 0

    # ---------------------------------------------------------------- writing

    def append(self, items: Sequence[Item]) -> None:
        """Write records to the current segment. Raises JournalWriteError (disk full...),
        which tells how many of the first records it kept."""
        if not items:
            return
        lines = [encode_entry(item).encode("utf-8") for item in items]
        data = b"".join(lines)
        with self._lock:
            if self._fd is None:
                try:
                    self._open_segment()
                except OSError as exc:
                    raise JournalWriteError(exc, 0) from exc
            assert self._fd is not None
            done, error = _write_some(self._fd, data)
            if error is not None:
                kept, kept_bytes = _whole_lines(lines, done)
                self._keep(kept_bytes)
                raise JournalWriteError(error, kept) from error
            self._size += done
            if self.fsync:
                self._sync(len(items))
            if self._size >= self.segment_bytes:
                self._close_segment()

    def _keep(self, kept_bytes: int) -> None:
        """After a failed write: keep the whole lines, cut off a torn one."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size + kept_bytes)
        except OSError:
            # The torn line stays; a replayer skips it. Later appends go elsewhere.
            self._close_segment()
            return
        self._size += kept_bytes
        if self.fsync and kept_bytes:
            self._sync(None)

    def _sync(self, records: int | None) -> None:
        """fsync the segment. Its lines are in the file whatever fsync says, and a
        replayer reads them from there, so they stay journaled; only their
        survival of a power cut is in doubt."""
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as exc:
            what = f"{records} records" if records is not None else "records"
            log.warning(
                "fsync of journal %s failed (%s): %s are in it but may not survive a power cut",
                self._path, exc.strerror or exc, what,
            )  # fmt: skip

    def seal(self) -> None:
        """Close the segment being written so that it can be replayed."""
        with self._lock:
            self._close_segment()

    def _open_segment(self) -> None:
        self._seq += 1
        tag = f"-{self.destination}" if self.destination else ""
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{tag}{SEGMENT_SUFFIX}"
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        path = self.directory / name
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # before the name is visible to replayers
            os.rename(temporary, path)
        except OSError:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        if self.fsync:
            with contextlib.suppress(OSError):  # the entry is there; fsync only makes it last
                _fsync_dir(self.directory)
        self._fd, self._path, self._size = fd, path, 0

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
        self._fd, self._path, self._size = None, None, 0

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's open segment without writing to it.
        Closing our copy of the descriptor leaves the parent's lock in place."""
        self._lock = threading.Lock()
        self._close_segment()

    def close(self) -> None:
        self.seal()

    # ---------------------------------------------------------------- replay

    def segments(self) -> list[Path]:
        """This producer's segments: those of its destination, and untagged ones (written
        before segments carried one); every one for a journal without a destination."""
        return [path for path in self._all_segments() if self._ours(path.name)]

    def others(self) -> int:
        """Segments left for producers of other queues, which this one never replays."""
        return sum(1 for path in self._all_segments() if not self._ours(path.name))

    def _ours(self, name: str) -> bool:
        return not self.destination or _destination(name) in ("", self.destination)

    def _all_segments(self) -> list[Path]:
        try:
            names = sorted(e.name for e in os.scandir(self.directory) if _is_segment(e.name))
        except FileNotFoundError:
            return []
        return [self.directory / name for name in names]

    def pending(self) -> bool:
        """Are there segments, ours or other processes', waiting to be replayed?"""
        return bool(self.segments())

    def pending_records(self) -> int:
        """Records waiting in every segment, past each one's replay progress (a count of
        lines: read once, when a producer starts or stops with a journal to report)."""
        total = 0
        for path in self.segments():
            try:
                with path.open("rb") as segment:
                    segment.seek(_read_offset(path))
                    total += sum(1 for line in segment if line.endswith(b"\n"))
            except FileNotFoundError:
                continue  # replayed and removed by another process meanwhile
        return total

    def claim(self) -> SegmentReader | None:
        """Lock the oldest segment nobody else holds, for replay."""
        with self._lock:
            current = self._path
        for path in self.segments():
            if path != current and (reader := _try_claim(path)) is not None:
                return reader
        return None

    # ---------------------------------------------------------------- rejected

    def reject(self, items: Iterable[Item], reason: str, queue_url: str | None) -> None:
        """Keep records SQS refused as our fault, for a human to look at."""
        at = datetime.now(UTC).isoformat()
        lines = (
            json.dumps({"at": at, "queue": queue_url, "reason": reason, "record": as_json(item)})
            + "\n"
            for item in items
        )
        data = "".join(lines).encode("utf-8")
        fd = os.open(self.directory / REJECTED_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


class SegmentReader:
    """A locked segment being replayed. Read in chunks; commit progress; finish."""

    def __init__(self, path: Path, fd: int, offset: int) -> None:
        self.path = path
        self._file = os.fdopen(fd, "rb")
        self._file.seek(offset)
        self.offset = offset
        self._unmarked = False  # a progress mark could not be written

    def read_chunk(self, max_bytes: int) -> tuple[list[Item], list[str], int]:
        """Up to max_bytes of records from the current position: (records,
        unreadable lines, offset after them). Empty records: end of segment."""
        items: list[Item] = []
        bad: list[str] = []
        size = 0
        position = self._file.tell()
        while size < max_bytes:
            raw = self._file.readline()
            if not raw.endswith(b"\n"):
                if raw:  # the writer died mid-line: that record was never complete
                    log.warning("journal %s ends with a partial record; skipped", self.path.name)
                break
            position += len(raw)
            size += len(raw)
            text = raw.decode("utf-8", "replace")
            try:
                items.append(decode_entry(text))
            except ValueError:
                bad.append(text.rstrip("\n"))
        return items, bad, position

    def commit(self, offset: int) -> None:
        """Everything before offset is sent; a later replay starts there. If the mark
        cannot be written (a full disk), replay goes on without it: only a crash
        before the segment is finished would then send those records again."""
        self.offset = offset
        temporary = self.path.with_name(f".{self.path.name}.pos.tmp")
        try:
            temporary.write_text(str(offset))
            os.replace(temporary, _pos_path(self.path))
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            if not self._unmarked:
                log.warning(
                    "cannot mark replay progress in %s (%s): replaying it without marks",
                    self.path.name, exc.strerror or exc,
                )  # fmt: skip
            self._unmarked = True

    def finish(self) -> None:
        """Every record is sent: delete the segment, then let go of the lock."""
        self.path.unlink(missing_ok=True)
        _pos_path(self.path).unlink(missing_ok=True)
        self._file.close()

    def release(self) -> None:
        """Stop replaying for now; keep the segment and its progress."""
        self._file.close()


def _try_claim(path: Path) -> SegmentReader | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A replayer that finished it may have unlinked it while we waited to open.
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
        offset = _read_offset(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    return SegmentReader(path, fd, offset)


def _read_offset(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(_pos_path(path).read_text())
    return 0


def _pos_path(path: Path) -> Path:
    return path.with_name(path.name + ".pos")


def _is_segment(name: str) -> bool:
    return name.endswith(SEGMENT_SUFFIX) and not name.startswith(".")


def _destination(name: str) -> str:
    """`<time>-<pid>-<seq>[-<destination>].seg`: the destination, "" when untagged."""
    parts = name.removesuffix(SEGMENT_SUFFIX).split("-")
    return parts[3] if len(parts) > 3 else ""


def _write_all(fd: int, data: bytes) -> None:
    error = _write_some(fd, data)[1]
    if error is not None:
        raise error


def _write_some(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write data; return the bytes written, and the error that stopped it if any."""
    view = memoryview(data)
    done = 0
    while done < len(data):
        try:
            done += os.write(fd, view[done:])
        except OSError as exc:
            return done, exc
    return done, None


def _whole_lines(lines: Sequence[bytes], written: int) -> tuple[int, int]:
    """Of lines written back to back, how many fit whole in the first `written`
    bytes, and their size."""
    count = size = 0
    for line in lines:
        if size + len(line) > written:
            break
        count, size = count + 1, size + len(line)
    return count, size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
