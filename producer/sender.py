"""The background sender thread: buffer -> packed messages -> SendMessageBatch.

Per call: entries SQS failed without blaming us, and throttling, 5xx and
dropped connections for the whole call, are retried with exponential backoff
and jitter (tenacity). Entries SQS failed as our fault (SenderFault) are
surfaced and kept in the journal's rejected file. A queue that cannot be
reached, or still fails after the retries, counts against its circuit breaker
and the batch moves to the next healthy queue; with none left the records go
to the journal, which this thread replays once a queue answers again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import wire
from .breaker import Router
from .buffer import Buffer, Item, as_json
from .config import SQS_MAX_MESSAGE_BYTES, Config
from .journal import Journal, JournalWriteError, SegmentReader
from .metrics import Counters
from .offload import Offloader
from .packing import Message, Packer, batches
from .retrying import LATER, UNREACHABLE, retrying, transport_failure

log = logging.getLogger("producer.sender")

ErrorCallback = Callable[[list[str], str], None]

LOSS_REPORT_SECONDS = 10.0  # at most one log line this often for records the journal refused
# The MaximumMessageSize every SQS queue had before SQS's 1 MiB (and the default of many):
# packed messages up to this size go without asking the queue for its limit.
UNASKED_MESSAGE_BYTES = 256 * 1024


class _QueueDown(Exception):
    """The queue could not take the call: unreachable, or still failing after retries."""


class _Rejected(Exception):
    """SQS refused the whole call as malformed (a 4xx naming the request)."""


class _RetryLater(Exception):
    def __init__(self, whole_call: Exception | None = None) -> None:
        super().__init__(str(whole_call) if whole_call else "entries failed")
        self.whole_call = whole_call


class _JournalLosses:
    """Records the journal could not take, told in one log line at a time: a full disk
    fails every flush, and a line (let alone a traceback) each time would flood the log."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._lost = self._kept = 0
        self._error = ""
        self._next_report = 0.0

    def add(self, kept: int, lost: int, error: str) -> None:
        with self._lock:
            self._lost, self._kept, self._error = self._lost + lost, self._kept + kept, error
        self.report(when_due=True)

    def report(self, *, when_due: bool = False) -> None:
        """Log what is not told yet, if anything (when_due: unless a line went out
        less than LOSS_REPORT_SECONDS ago)."""
        with self._lock:
            if not self._lost or (when_due and time.monotonic() < self._next_report):
                return
            lost, kept, error = self._lost, self._kept, self._error
            self._lost = self._kept = 0
            self._next_report = time.monotonic() + LOSS_REPORT_SECONDS
        log.error(
            "journal %s refused records (%s): %d lost, counted as failed and passed to "
            "on_error; %d written before it refused, counted as journaled",
            self._directory, error, lost, kept,
        )  # fmt: skip


class Sender:
    def __init__(
        self,
        config: Config,
        buffer: Buffer,
        packer: Packer,
        router: Router,
        journal: Journal,
        counters: Counters,
        get_client: Callable[[], Any],
        on_error: ErrorCallback | None = None,
        offloader: Offloader | None = None,
    ) -> None:
        self._config = config
        self._buffer = buffer
        self._packer = packer
        self._router = router
        self._journal = journal
        self._counters = counters
        self._get_client = get_client
        self._on_error = on_error
        self._thread: threading.Thread | None = None
        self._replay: SegmentReader | None = None
        self._journal_pending = True  # a crashed process may have left segments
        self._delivered: bool | None = None  # did the last batch reach a queue?
        self._next_probe = 0.0
        self._next_scan = 0.0  # for segments other processes left (see _adopt_orphans)
        self._losses = _JournalLosses(journal.directory)
        self._offloader = offloader
        self._queue_limit: int | None = None  # the smallest MaximumMessageSize, read once

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sqs-producer", daemon=True)
        self._thread.start()

    @property
    def thread_id(self) -> int | None:
        """The running sender thread's ident (forks wait for its imports)."""
        thread = self._thread
        return thread.ident if thread is not None and thread.is_alive() else None

    def join(self, timeout: float | None) -> bool:
        """Wait for the thread to finish; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def forget_after_fork(self) -> None:
        """In a forked child: close our copy of a segment the parent is replaying.
        The parent's copy keeps the flock; the child never touches the file."""
        if self._replay is not None:
            self._replay.release()
            self._replay = None

    def note_journaled(self) -> None:
        """A caller spilled records into the journal (overflow)."""
        self._journal_pending = True

    def _run(self) -> None:
        try:
            while self._step():
                pass
        finally:
            if self._replay is not None:
                self._replay.release()
                self._replay = None
            self._journal.seal()
            self._losses.report()

    def _step(self) -> bool:
        buffer = self._buffer
        until = self._wake_for_journal()
        if buffer.wait_for_work(self._config.linger_seconds, until):
            self._flush_once()
        elif buffer.abandoned:
            return False
        elif buffer.closing and not buffer.has_work():
            # Closing: what the journal holds goes too, while SQS takes it (a script
            # that exits soon after starting must not leave an earlier run's records).
            # Not after a failed delivery: close() would only wait out its timeout.
            if not self._journal_pending or self._delivered is False:
                return False
            return self._replay_guarded(at_close=True)
        self._losses.report(when_due=True)  # losses held back by the one-line-per-10-s rule
        if buffer.closing:
            return True
        if not self._journal_pending:
            self._adopt_orphans()
        if self._journal_pending:
            self._replay_guarded(at_close=False)
        return True

    def _replay_guarded(self, *, at_close: bool) -> bool:
        """One replay step; False when it made no progress or failed."""
        try:
            return self._replay_step(at_close=at_close)
        except OSError as exc:  # the journal's disk: expected, and told in one line
            log.error(
                "journal replay failed (%s); retrying in %ss", exc, self._config.probe_seconds
            )
        except Exception:  # e.g. a bug: keep the live path going
            log.exception("journal replay failed; retrying in %ss", self._config.probe_seconds)
        if self._replay is not None:
            self._replay.release()
            self._replay = None
        return False

    def _wake_for_journal(self) -> float:
        if not self._journal_pending:
            return self._next_scan
        return time.monotonic() if self._replay is not None else self._next_probe

    def _adopt_orphans(self) -> None:
        """Take on a segment nobody holds. A live writer keeps its segment locked, so this
        finds only those of processes that exited: a sibling worker killed during an
        outage, or one that could not send, leaves its records to the survivors."""
        now = time.monotonic()
        if now < self._next_scan:
            return
        self._next_scan = now + self._config.journal_scan_seconds
        try:
            reader = self._journal.claim()
        except OSError as exc:  # the directory cannot be read: try at the next scan
            log.warning("cannot look for journal segments in %s: %s", self._journal.directory, exc)
            return
        if reader is not None:
            log.info("journal segment %s left by another process: replaying it", reader.path.name)
            self._replay, self._journal_pending = reader, True
            self._next_probe = now + self._config.probe_seconds

    # ---------------------------------------------------------------- live path

    def take_bytes(self) -> int:
        per_batch = max(1, min(10, self._config.max_batch_bytes // self._config.max_message_bytes))
        return self._packer.raw_budget() * per_batch

    def _flush_once(self) -> None:
        items = self._buffer.take(self.take_bytes())
        try:
            unsent = self._send_records(items)
            if unsent:
                self.spill(unsent)
        except Exception:  # a bug here must not lose records: journal them all
            log.exception("unexpected error while sending; journaling %d records", len(items))
            self.spill(items)
        finally:
            self._buffer.settle(items)
            self._buffer.set_full(self.take_bytes())

    def _send_records(self, items: Sequence[Item]) -> list[Item]:
        """Pack, put what is too large for the queue in S3, send; return the records
        that neither took now (for the journal)."""
        if self._config.max_message_bytes > UNASKED_MESSAGE_BYTES:
            self._message_limit()  # packed messages this large: only where the queue takes them
        messages = self._packer.pack(items)
        held: list[Item] = []
        if any(m.size > self._packer.max_message_bytes for m in messages):
            messages, held = self._place_large(messages)
        unsent = self._deliver(messages) + held
        self._delivered = not unsent
        return unsent

    def _place_large(self, messages: list[Message]) -> tuple[list[Message], list[Item]]:
        """A record alone in a message: sent as it is up to the queue's limit, through S3
        past it. Returns the messages to send, and the records to journal (S3 is down)."""
        limit = self._message_limit()

        def too_large(message: Message) -> bool:
            return message.size > limit

        if self._offloader is None:  # send() let it through for SQS's 1 MiB: the queue is smaller
            for message in filter(too_large, messages):
                self._reject(
                    list(message.items),
                    f"message of {message.size} bytes is past the queue's MaximumMessageSize "
                    f"({limit}): set payload_bucket to send such records through S3",
                    None,
                )
            return [m for m in messages if not too_large(m)], []
        placed = self._offloader.offload(messages, too_large)
        for message, reason in placed.refused:
            self._reject(list(message.items), reason, None)
        return placed.ready, [item for m in placed.held for item in m.items]

    def _message_limit(self) -> int:
        """The largest message every queue takes (its MaximumMessageSize), read once; the
        packer's messages are kept within it."""
        if self._queue_limit is None:
            found = [self._read_limit(url) for url in self._config.queue_urls]
            if None in found:
                return SQS_MAX_MESSAGE_BYTES  # no answer: asked again next time
            self._queue_limit = min(limit for limit in found if limit is not None)
            if self._queue_limit < self._packer.max_message_bytes:
                log.warning(
                    "a queue takes messages of at most %d bytes (MaximumMessageSize): "
                    "max_message_bytes=%d is lowered to it",
                    self._queue_limit, self._packer.max_message_bytes,
                )  # fmt: skip
                self._packer.max_message_bytes = self._queue_limit
        return self._queue_limit

    def _read_limit(self, url: str) -> int | None:
        """A queue's MaximumMessageSize; SQS's own limit when it does not say (ElasticMQ)
        or refuses to (no sqs:GetQueueAttributes); None when it does not answer."""
        try:
            found = self._get_client().get_queue_attributes(
                QueueUrl=url, AttributeNames=["MaximumMessageSize"]
            )
        except Exception as exc:
            if _answered(exc):
                log.warning(
                    "cannot read the MaximumMessageSize of %s (%s): taking SQS's %d bytes",
                    url, exc, SQS_MAX_MESSAGE_BYTES,
                )  # fmt: skip
                return SQS_MAX_MESSAGE_BYTES
            return None
        value = str(found.get("Attributes", {}).get("MaximumMessageSize", ""))
        return int(value) if value.isdigit() else SQS_MAX_MESSAGE_BYTES

    def _deliver(self, messages: Sequence[Message]) -> list[Item]:
        """Send messages; return the records no queue took (for the journal)."""
        unsent: list[Item] = []
        for batch in batches(messages, self._config.max_batch_bytes):
            left = self._deliver_batch(batch)
            self._discard_payloads(left)  # their records are journaled, and put again
            for message in left:
                unsent.extend(message.items)
        return unsent

    def _discard_payloads(self, messages: Sequence[Message]) -> None:
        """Pointer messages that will never be sent as they are: delete their objects."""
        if self._offloader is not None:
            self._offloader.discard(messages)

    def _deliver_batch(self, batch: list[Message]) -> list[Message]:
        left = batch
        tried: set[str] = set()
        while left:
            url = self._router.choose(tried)
            if url is None:
                break
            tried.add(url)
            try:
                left = self._send_retrying(url, left)
            except _Rejected as exc:
                self._reject([item for m in left for item in m.items], str(exc), url)
                self._discard_payloads(left)
                self._router.breakers[url].success()  # the queue answered
                return []
            except _QueueDown as exc:
                log.warning("queue %s unavailable: %s", url, exc)
                self._router.breakers[url].failure()
                continue
            self._router.breakers[url].success()
        return left

    def _send_retrying(self, url: str, batch: list[Message]) -> list[Message]:
        """One SendMessageBatch with retries; returns entries still failing."""
        left = batch
        try:
            for attempt in retrying(self._config, _RetryLater):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        self._counters.add("retried", _records(left))
                    left = self._call(url, left)
                    if left:
                        raise _RetryLater()
        except _RetryLater as exc:
            if exc.whole_call is not None:
                raise _QueueDown(f"still failing after retries: {exc}") from exc
        return left

    def _call(self, url: str, batch: list[Message]) -> list[Message]:
        entries = [_entry(str(index), message) for index, message in enumerate(batch)]
        try:
            response = self._get_client().send_message_batch(QueueUrl=url, Entries=entries)
        except Exception as exc:
            raise _classify(exc) from exc
        done = {entry["Id"] for entry in response.get("Successful", ())}
        faults = {f["Id"]: f for f in response.get("Failed", ()) if f.get("SenderFault")}
        self._counters.add("sent", _records([m for i, m in enumerate(batch) if str(i) in done]))
        for index, failure in faults.items():
            reason = f"{failure.get('Code', '?')}: {failure.get('Message', '')}".strip()
            self._reject(list(batch[int(index)].items), reason, url)
            self._discard_payloads([batch[int(index)]])
        # Whatever SQS did not confirm, and did not blame on us, is worth another try.
        return [m for i, m in enumerate(batch) if str(i) not in done and str(i) not in faults]

    # ---------------------------------------------------------------- failures

    def _reject(self, items: list[Item], reason: str, url: str | None) -> None:
        """Records SQS will never take: log, count, call back, keep in the rejected file."""
        log.error("SQS rejected %d records (%s) from %s", len(items), reason, url)
        self._counters.add("failed", len(items))
        try:
            self._journal.reject(items, reason, url)
        except OSError as exc:
            log.error("could not keep rejected records in %s: %s", self._journal.directory, exc)
        self._tell(items, reason)

    def _tell(self, items: Sequence[Item], reason: str) -> None:
        if self._on_error is not None:
            try:
                self._on_error([as_json(item) for item in items], reason)
            except Exception:
                log.exception("on_error callback raised")

    def spill(self, items: Sequence[Item]) -> None:
        """Journal records no queue took. What the journal cannot hold (a full disk) is
        lost: counted as failed, passed to on_error, and told in one log line."""
        try:
            self._journal.append(items)
            written = len(items)
        except JournalWriteError as exc:
            written = exc.written
            lost = items[written:]
            self._counters.add("failed", len(lost))
            self._tell(lost, f"journal write failed: {exc}")
            self._losses.add(written, len(lost), str(exc))
        self._counters.add("journaled", written)
        if not written:
            return
        if not self._journal_pending:
            self._next_probe = time.monotonic() + self._config.probe_seconds
        self._journal_pending = True

    def report_losses(self) -> None:
        self._losses.report()

    # ---------------------------------------------------------------- replay

    def _replay_step(self, *, at_close: bool = False) -> bool:
        """Send one chunk of the oldest journal segment, if a probe is due (or closing).
        Returns whether it made progress."""
        if self._replay is None:
            if time.monotonic() < self._next_probe and not at_close:
                return False
            self._next_probe = time.monotonic() + self._config.probe_seconds
            self._replay = self._claim()
            if self._replay is None:
                return False
        reader = self._replay
        items, bad, offset = reader.read_chunk(self.take_bytes())
        if bad:
            unreadable = [Item(line, "", len(line)) for line in bad]
            self._reject(unreadable, "unreadable journal line", None)
        if not items and not bad:
            reader.finish()
            log.info("journal segment %s replayed", reader.path.name)
            self._replay, self._next_probe = None, time.monotonic()
            return True
        unsent = self._send_records(items) if items else []
        if unsent:
            reader.release()  # try again at the next probe, from the last commit
            self._replay = None
            return False
        reader.commit(offset)
        self._counters.add("replayed", len(items))
        return True

    def _claim(self) -> SegmentReader | None:
        reader = self._journal.claim()
        if reader is None:
            # Only our own open segment may be left: close it so it can be replayed.
            self._journal.seal()
            reader = self._journal.claim()
        if reader is None:
            self._journal_pending = self._journal.pending()  # others' segments: keep probing
        return reader


def _records(messages: Sequence[Message]) -> int:
    return sum(len(message.items) for message in messages)


def _entry(entry_id: str, message: Message) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": message.body,
        "MessageAttributes": message.attributes,
    }
    if message.group_id is not None:
        entry["MessageGroupId"] = message.group_id
        entry["MessageDeduplicationId"] = message.dedup_id
    return entry


def _answered(exc: Exception) -> bool:
    """Did SQS answer (with an error), rather than not answer at all?"""
    try:
        from botocore.exceptions import ClientError
    except ImportError:  # a fake client without botocore installed
        return False
    return isinstance(exc, ClientError)


def _classify(exc: Exception) -> Exception:
    """Map a whole-call failure to "retry with backoff" or "queue unavailable"."""
    failure = transport_failure(exc)
    if failure == UNREACHABLE:
        return _QueueDown(f"cannot reach SQS: {exc}")
    if failure == LATER:
        return _RetryLater(exc)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError: SQS answered
        code, status = wire.sqs_error_of(response)
        kind = wire.classify_sqs_error(code, status)
        if kind is wire.SqsErrorKind.TRANSIENT:
            return _RetryLater(exc)
        if kind is wire.SqsErrorKind.REQUEST_FAULT:
            return _Rejected(f"{code}: {exc}")
        log.error("SQS refused the whole call: %s", exc)
    return _QueueDown(repr(exc))
