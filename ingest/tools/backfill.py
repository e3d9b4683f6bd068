"""`ingest backfill PATH`: load history into the queue through producer.Producer.

Exactly-once in effect, at-least-once on the wire:

* every document gets a stable _id (its own, or one derived from its source
  position, see ingest/ids.py), so a record sent twice is one document;
* the checkpoint advances only after producer.flush() returned and the
  producer's counters show that every record so far reached SQS (none left in
  its journal, none failed). An interrupted run resumes from the checkpoint
  and may resend the records after it, which the consumer collapses.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Protocol

import bson
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from tqdm import tqdm

from ingest.errors import BackfillError
from ingest.flow.ceiling import TokenBucket
from ingest.tools.checkpoint import Checkpoint
from ingest.tools.ids import derive_object_id, timestamp_of
from ingest.tools.readers import BadLine, SourceFile, discover, read
from producer import RecordChecker, operations, wire

log = logging.getLogger("ingest.backfill")

Document = dict[str, Any] | RawBSONDocument  # a mongodump document stays BSON

MAX_PRINTED_BAD_LINES = 100
STOP_FLUSH_SECONDS = 5.0  # after Ctrl-C, how long to wait for SQS before giving up


class Undelivered(BackfillError):
    """Records handed to the producer did not reach SQS in time; the checkpoint stays
    before them."""


class RecordSender(Protocol):
    """What backfill needs from producer.Producer."""

    def send(self, collection: str, document: Mapping[str, Any]) -> Any: ...

    def send_operation(self, collection: str, operation: wire.Operation) -> Any: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def stats(self) -> Any: ...

    def close(self, timeout: float | None = 10.0) -> None: ...


@dataclass(frozen=True)
class Options:
    path: Path
    checkpoint: Path
    queue_url: str
    collection: str | None = None
    source_id: str | None = None
    bad_lines: Path | None = None
    rate: float | None = None  # records per second; None: as fast as SQS takes them
    dry_run: bool = False
    checkpoint_every: int = 5000
    time_field: str | None = None
    flush_timeout: float = 120.0
    max_message_bytes: int = 64 * 1024
    progress: bool = True
    operations: bool = False  # JSON Lines of {"op": "insert" | "update" | "delete", ...}


@dataclass
class Report:
    files: int = 0
    sent: int = 0  # handed to the producer (validated, in --dry-run)
    skipped: int = 0  # before the checkpoint: sent by an earlier run
    bad_lines: int = 0
    ids_kept: int = 0
    ids_derived: int = 0
    interrupted: bool = False
    dry_run: bool = False
    seconds: float = 0.0
    bad_by_file: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.dry_run:  # nothing was sent: the records were only read and checked
            data["valid"] = data.pop("sent")
        return data


class BadLines:
    """Reports every bad line: on stderr (the first 100 in full), counted per
    file in the report, and all of them in --bad-lines FILE as JSON Lines."""

    def __init__(self, path: Path | None, report: Report, echo: Callable[[str], None]) -> None:
        self._report = report
        self._echo = echo
        self._out: IO[str] | None = path.open("a", encoding="utf-8") if path else None

    def add(self, source: SourceFile, bad: BadLine) -> None:
        self._report.bad_lines += 1
        counts = self._report.bad_by_file
        counts[source.source_id] = counts.get(source.source_id, 0) + 1
        where = f"{source.path}:{bad.position}" if bad.position > 0 else str(source.path)
        if self._report.bad_lines <= MAX_PRINTED_BAD_LINES:
            self._echo(f"bad line {where}: {bad.reason}")
        elif self._report.bad_lines == MAX_PRINTED_BAD_LINES + 1:
            self._echo(
                "more bad lines: counted in the summary"
                + ("" if self._out else "; use --bad-lines FILE to keep them")
            )
        if self._out:
            entry = {"file": str(source.path), "source_id": source.source_id,
                     "line": bad.position, "reason": bad.reason, "text": bad.text}  # fmt: skip
            self._out.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        if self._out:
            self._out.close()


class Backfill:
    def __init__(
        self,
        options: Options,
        sender: RecordSender | None,
        stop: threading.Event | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        if sender is None and not options.dry_run:
            raise ValueError("a sender is needed unless dry_run")
        self.options = options
        # A dry run hands the records to the producer's own checks, and sends nothing.
        self.sender: RecordSender = sender or RecordChecker(
            max_message_bytes=options.max_message_bytes
        )
        self.stop = stop or threading.Event()
        self.report = Report(dry_run=options.dry_run)
        self._echo = echo or _to_stderr  # stdout is for the summary
        self._pending: dict[str, int] = {}  # positions handed over since the last checkpoint
        self._since_checkpoint = 0
        self._baseline = self._undelivered()
        self._baseline_failed = self._failed()

    def run(self) -> Report:
        options = self.options
        files = discover(options.path, options.source_id)
        collections = self._collections(files)
        checkpoint = Checkpoint(options.checkpoint, options.queue_url)
        if not options.dry_run:
            checkpoint = Checkpoint.load(options.checkpoint, options.queue_url)
        bad = BadLines(options.bad_lines, self.report, self._echo)
        total = sum(f.path.stat().st_size for f in files)
        started = time.monotonic()
        progress = tqdm(total=total, unit="B", unit_scale=True, disable=not options.progress,
                        desc="dry run" if options.dry_run else "backfill")  # fmt: skip
        try:
            for source in files:
                if self.stop.is_set():
                    break
                self.report.files += 1
                self._file(source, collections[source.source_id], checkpoint, bad, progress)
            self._commit(checkpoint)
        finally:
            progress.close()
            bad.close()
            self.report.interrupted = self.stop.is_set()
            self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    def _collections(self, files: list[SourceFile]) -> dict[str, str]:
        names = {}
        for source in files:
            name = self.options.collection or source.default_collection
            if name is None:
                raise BackfillError(f"{source.path}: no collection: pass --collection")
            try:
                names[source.source_id] = wire.check_collection_name(name)
            except wire.WireError as exc:
                raise BackfillError(f"{source.path}: {exc}") from exc
        return names

    def _file(
        self,
        source: SourceFile,
        collection: str,
        checkpoint: Checkpoint,
        bad: BadLines,
        progress: tqdm[Any],
    ) -> None:
        if checkpoint.is_done(source.source_id):
            progress.update(source.path.stat().st_size)
            return
        resume_after = checkpoint.position(source.source_id)
        # At most `rate` records per second, in bursts of a hundredth of a second's worth.
        rate = self.options.rate
        pacer = TokenBucket(rate, max(1.0, rate / 100)) if rate else None
        for item in read(source, progress.update):
            if self.stop.is_set():
                return
            if 0 < item.position <= resume_after:
                self.report.skipped += 1
                continue
            if isinstance(item, BadLine):
                bad.add(source, item)
            else:
                problem = self._send(source, collection, item.position, item.document)
                if problem:
                    bad.add(source, BadLine(item.position, problem, _as_text(item.document)))
                if pacer is not None:
                    pacer.acquire(1)
            if item.position > 0:
                self._pending[source.source_id] = item.position
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.options.checkpoint_every:
                self._commit(checkpoint)
            progress.set_postfix(records=self.report.sent, refresh=False)
        checkpoint.finish(source.source_id)

    def _send(
        self, source: SourceFile, collection: str, position: int, document: Document
    ) -> str | None:
        """Hands one document over (a dry run's sender only checks it, with the same
        checks); returns why it is bad, or None."""
        try:
            if self.options.dry_run and isinstance(document, RawBSONDocument):
                _check_bson(document)  # a run sends the bytes as they are: look closer now
            if self.options.operations:
                self._send_operation(source, collection, position, document)
            else:
                self.sender.send(collection, self._with_id(source, position, document))
        except (wire.WireError, ValueError) as exc:
            return str(exc)
        self.report.sent += 1
        return None

    def _send_operation(
        self, source: SourceFile, collection: str, position: int, line: Document
    ) -> None:
        """One line of --operations: an insert, an update or a delete. Its operation id
        is derived like a missing _id, so a re-run applies nothing twice; ordered ones
        need their "version" (a derived id orders nothing)."""
        kind, fields = line.get("op"), set(line)
        if (
            kind == "insert"
            and fields <= {"op", "document"}
            and isinstance(line.get("document"), dict)
        ):
            self.sender.send(collection, self._with_id(source, position, line["document"]))
            return
        if kind not in ("update", "delete"):
            raise ValueError('an operation line needs "op": "insert", "update" or "delete"')
        allowed = {"op", "_id", "version"} | ({"update", "ordered"} if kind == "update" else set())
        if fields - allowed or "_id" not in line:
            raise ValueError(
                f'a {kind} line has "_id" and may have {", ".join(sorted(allowed - {"op", "_id"}))}'
            )
        op_id = derive_object_id(source.source_id, position)
        version = line.get("version")
        if kind == "delete":
            operation = operations.delete(line["_id"], version, operation_id=op_id)
        else:
            ordered = line.get("ordered")
            operation = operations.update(line["_id"], line.get("update", {}), version, ordered,
                                          operation_id=op_id)  # fmt: skip
        if operation.version == op_id:
            raise ValueError(f'an ordered {kind} from a file needs its "version"')
        self.sender.send_operation(collection, operation)
        self.report.ids_kept += 1

    def _with_id(self, source: SourceFile, position: int, document: Document) -> Document:
        if _has_id(document):
            self.report.ids_kept += 1
            return document
        timestamp = None
        if self.options.time_field:
            if self.options.time_field not in document:
                raise ValueError(f"no {self.options.time_field!r} field to derive the _id from")
            timestamp = timestamp_of(document[self.options.time_field])
        oid = derive_object_id(source.source_id, position, timestamp)
        self.report.ids_derived += 1
        if isinstance(document, RawBSONDocument):
            if "_id" not in document:  # a mongodump document stays BSON
                return RawBSONDocument(wire.with_id(bytes(document.raw), oid))
            document = dict(document)  # its _id is null: replaced, not put beside it
        document["_id"] = oid
        return document

    def _commit(self, checkpoint: Checkpoint) -> None:
        """Flush, prove everything so far reached SQS, then move the checkpoint."""
        self._since_checkpoint = 0
        if self.options.dry_run:
            return
        self._wait_delivered()
        for source_id, position in self._pending.items():
            checkpoint.advance(source_id, position)
        self._pending.clear()
        checkpoint.save()

    def _wait_delivered(self) -> None:
        """Until every record so far is in SQS: flushed, and none left in the journal.
        Ctrl-C, before or while waiting, shortens the wait to a few seconds; what is not
        delivered by then stays in the producer's journal and before the checkpoint."""
        sender = self.sender
        started = time.monotonic()
        stopped_at: float | None = None
        flushed = False
        undelivered = 0
        while True:
            now = time.monotonic()
            if stopped_at is None and self.stop.is_set():
                stopped_at = now
            end = started + self.options.flush_timeout
            if stopped_at is not None:
                end = min(end, stopped_at + STOP_FLUSH_SECONDS)
            left = end - now
            if not flushed:  # in slices, so that Ctrl-C is seen while SQS does not answer
                flushed = sender.flush(max(0.0, min(0.5, left)))
            if flushed:
                # Records the producer journaled (SQS unreachable) are replayed by its
                # sender thread; wait for that rather than checkpoint past them.
                undelivered = self._undelivered() - self._baseline
                if undelivered <= 0:
                    return
                if self._failed() > self._baseline_failed:
                    left = 0.0
            if left <= 0:
                if not flushed:
                    raise Undelivered(f"the producer did not flush within {now - started:.0f}s")
                raise Undelivered(
                    f"{undelivered} records did not reach SQS (journaled or failed); "
                    "the checkpoint stays before them, run again to resend"
                )
            if flushed:
                time.sleep(min(0.2, left))

    def _undelivered(self) -> int:
        stats = self.sender.stats()
        return int(stats.journaled) - int(stats.replayed) + int(stats.failed)

    def _failed(self) -> int:
        return int(self.sender.stats().failed)


def _to_stderr(text: str) -> None:
    tqdm.write(text, file=sys.stderr)  # above the progress bar, when there is one


def _check_bson(document: RawBSONDocument) -> None:
    try:
        bson.decode(document.raw)
    except (BSONError, ValueError, OverflowError) as exc:
        raise wire.WireError(f"document is not valid BSON: {wire.bson_problem(exc, {})}") from exc


_BSON_NULL: Final = 0x0A


def _has_id(document: Document) -> bool:
    """A null _id counts as none, as send() counts it: kept, it would be stamped
    afresh on each run, and a re-run would not be idempotent."""
    if isinstance(document, RawBSONDocument) and document.raw[5:9] == b"_id\x00":
        return document.raw[4] != _BSON_NULL  # the common shape, read without decoding
    return document.get("_id") is not None


def _as_text(document: Document) -> str:
    try:
        return wire.encode_record("-", document)
    except wire.WireError:
        return repr(document)[:1000]


def summary(report: Report) -> str:
    counts = Counter(report.bad_by_file)
    data = report.as_dict()
    data["bad_by_file"] = dict(counts.most_common(20))
    return json.dumps(data)
