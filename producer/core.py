"""Producer: the non-blocking front door. send() encodes on the caller's thread
and appends to a memory buffer; a background thread does all network I/O."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from bson.objectid import ObjectId

from . import forksafe, operations, wire
from .breaker import Breaker, Router
from .buffer import Buffer, Item
from .config import Config, with_environment
from .encode import Encoder
from .errors import BufferFull, ConfigError, ProducerClosed
from .journal import Journal, JournalWriteError, default_journal_dir, destination_of
from .lifecycle import Closing
from .metrics import Counters, Stats
from .offload import Offloader
from .packing import Packer
from .sender import ErrorCallback, Sender
from .tracing import traceparent_source

log = logging.getLogger("producer")

_live: weakref.WeakSet[Producer] = weakref.WeakSet()


class Producer(Closing):
    """Buffers records and ships them to SQS in packed batches from a background thread.

    See docs/producer.md for every option. Thread-safe; fork-safe (a child
    process starts with an empty buffer of its own)."""

    def __init__(
        self,
        queue_url: str | Sequence[str],
        *,
        sqs_client: Any = None,
        s3_client: Any = None,
        journal_dir: str | os.PathLike[str] | None = None,
        on_error: ErrorCallback | None = None,
        **options: Any,
    ) -> None:
        # The sender builds its boto3 client on first use, which imports
        # concurrent.futures; that import registers with threading, which Python refuses
        # once the interpreter is shutting down. Imported now (a few ms, once), a script
        # that exits without close() still delivers from the exit hook.
        import concurrent.futures.thread  # noqa: F401

        urls = (queue_url,) if isinstance(queue_url, str) else tuple(queue_url)
        if "wire_format" in options:
            options["wire_format"] = str(options["wire_format"])  # 2 or "2"
        self.config = Config(queue_urls=urls, **with_environment(options))
        self.journal_dir = Path(journal_dir) if journal_dir else default_journal_dir(urls)
        _check_journal_dir(self.journal_dir)
        self._given_client = sqs_client
        self._given_s3_client = s3_client
        self._on_error = on_error
        self._traceparent = traceparent_source()
        self._encoder = Encoder(
            self.config.wire_format, fifo=self.config.fifo, encoding=self.config.encoding,
            level=self.config.compression_level, payload_bucket=self.config.payload_bucket,
        )  # fmt: skip
        self._closed = False
        self._setup()
        _live.add(self)
        if others := self._journal.others():
            log.warning(
                "%d journal segments in %s are for other queues: a Producer of those "
                "queues with this journal_dir sends them", others, self.journal_dir,
            )  # fmt: skip
        if self._journal.pending():
            left = self._journal.pending_records()
            log.info("%d journaled records in %s: replaying them", left, self.journal_dir)
            self._start()  # records left by an earlier process: replay them now

    def _setup(self) -> None:
        """Fresh per-process state: at construction and in a forked child."""
        config = self.config
        self._pid = os.getpid()
        self._start_lock = threading.Lock()
        self._started = False
        self._client = self._given_client
        self._s3_client = self._given_s3_client
        self._counters = Counters()
        packer = Packer(
            config.max_message_bytes,
            config.encoding,
            fifo=config.fifo,
            level=config.compression_level,
            version=config.wire_format,
        )
        self._journal = Journal(
            self.journal_dir, fsync=config.journal_fsync,
            destination=destination_of(config.queue_urls),
        )  # fmt: skip
        self._buffer = Buffer(config.max_buffered_bytes, full_bytes=0)
        router = Router(config.queue_urls, self._make_breaker)
        offloader = None
        if config.payload_bucket is not None:
            offloader = Offloader(config.payload_bucket, config, self._get_s3_client)
        self._sender = Sender(
            config,
            self._buffer,
            packer,
            router,
            self._journal,
            self._counters,
            self._get_client,
            self._on_error,
            offloader,
        )
        self._buffer.set_full(self._sender.take_bytes())

    def _make_breaker(self, url: str) -> Breaker:
        return Breaker(
            url,
            threshold=self.config.breaker_threshold,
            reset_seconds=self.config.breaker_reset_seconds,
        )

    def _get_client(self) -> Any:
        # Built on the sender thread at first use, so import and setup cost
        # nothing on the request path, and a forked child builds its own.
        if self._client is None:
            with forksafe.building_client():
                self._client = self._build_sqs_client()
        return self._client

    @staticmethod
    def _build_sqs_client() -> Any:
        # We build every entry ourselves; validating ~2,500 fields per batch in
        # Python would only hold the GIL longer against send().
        return _boto3_client(
            "sqs", read_timeout=10, max_pool_connections=4, parameter_validation=False
        )

    def _get_s3_client(self) -> Any:
        # Like the SQS client: on the sender thread, at the first record past the queue.
        if self._s3_client is None:
            with forksafe.building_client():
                self._s3_client = self._build_s3_client()
        return self._s3_client

    @staticmethod
    def _build_s3_client() -> Any:
        # A put of up to ~22 MB (16 MiB of BSON in base64) gets 30 s.
        return _boto3_client("s3", read_timeout=30, max_pool_connections=2)

    # ---------------------------------------------------------------- sending

    def send(
        self,
        collection: str,
        document: Mapping[str, Any],
        *,
        partition_key: str | None = None,
    ) -> Any:
        """Queue one record for SQS and return its _id. No network I/O.

        Stamps document["_id"] with a new ObjectId if absent (like pymongo's
        insert_one); a RawBSONDocument is sent as it is. Raises WireError for a bad
        collection or document, RecordTooLarge if the record is too large for one SQS
        message and there is no payload_bucket,
        BufferFull when memory is full and overflow is "raise" or "block"."""
        self._check_open()
        trace = self._traceparent() if self._traceparent is not None else None
        item, record_id = self._encoder.item(collection, document, partition_key, trace)
        self._put(item)
        return record_id

    def update(
        self,
        collection: str,
        _id: Any,
        update: Mapping[str, Any],
        *,
        version: Any = None,
        ordered: bool | None = None,
        partition_key: str | None = None,
    ) -> ObjectId:
        """Queue an update of the document `_id` with MongoDB's operators ($inc, $set,
        ...) and return the operation's id. No network I/O. Applied once (an upsert: a
        missing document is created). Ordered (applied only over a lower stored version:
        `version=`, or by default its id) unless made only of $inc, $mul, $min, $max,
        $addToSet, $push, $bit and $setOnInsert, or `ordered=False`. Raises WireError,
        naming what to fix, for an update that cannot be applied (docs/producer.md)."""
        self._check_open()
        operation = operations.update(_id, update, version, ordered)
        return self._put_operation(collection, operation, partition_key)

    def delete(
        self,
        collection: str,
        _id: Any,
        *,
        version: Any = None,
        partition_key: str | None = None,
    ) -> ObjectId:
        """Queue a delete of the document `_id` and return the operation's id. It leaves a
        tombstone, so that an older write delivered late cannot bring the document back.
        Ordered by `version=`, or by default its id."""
        self._check_open()
        return self._put_operation(collection, operations.delete(_id, version), partition_key)

    def send_operation(
        self, collection: str, operation: wire.Operation, *, partition_key: str | None = None
    ) -> ObjectId:
        """Queue an operation built with producer.operations (a backfill gives each the
        same id on every run, so a re-run applies none twice)."""
        self._check_open()
        return self._put_operation(collection, operation, partition_key)

    def _put_operation(
        self, collection: str, operation: wire.Operation, partition_key: str | None
    ) -> ObjectId:
        trace = self._traceparent() if self._traceparent is not None else None
        self._put(self._encoder.operation(collection, operation, partition_key, trace))
        return operation.id

    def _check_open(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if self._closed:
            raise ProducerClosed("send() after close()")

    def _put(self, item: Item) -> None:
        if not self._started:
            self._start()
        if not self._buffer.put(item):
            self._overflow(item)

    def _overflow(self, item: Item) -> None:
        policy = self.config.overflow
        limit = self.config.max_buffered_bytes
        if policy == "block":
            if not self._buffer.put_waiting(item, self.config.block_timeout):
                raise BufferFull(
                    f"buffer still full ({limit} bytes) after {self.config.block_timeout}s"
                )
        elif policy == "raise":
            raise BufferFull(f"buffer full ({limit} bytes)")
        else:
            try:
                self._journal.append([item])
            except JournalWriteError as exc:
                raise BufferFull(f"buffer full ({limit} bytes) and journal failed: {exc}") from exc
            self._counters.add("journaled", 1)
            self._buffer.count_bypass(1)
            self._sender.note_journaled()

    def _start(self) -> None:
        with self._start_lock:
            if not self._started:
                self._sender.start()
                self._started = True
        _close_at_multiprocessing_exit()

    # ---------------------------------------------------------------- lifecycle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record sent before this call is in SQS or the journal."""
        if self._pid != os.getpid():
            self._after_fork()
        if not self._started:
            return True
        return self._buffer.wait_flushed(timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush, stop the sender thread, and journal whatever is still unsent
        when timeout runs out (10 s by default: well inside a web server's graceful
        stop, gunicorn's being 30 s). send() afterwards raises ProducerClosed."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        self._buffer.close()
        if not self._sender.join(timeout):
            left = self._buffer.abandon()
            log.warning("close timed out; journaling %d unsent records", len(left))
            self._sender.spill(left)
            self._sender.report_losses()
        self._journal.close()
        _live.discard(self)
        if self._journal.pending():
            log.warning(
                "%d records stay in the journal at %s: SQS did not take them before close(); "
                "the next Producer with this journal_dir sends them",
                self._journal.pending_records(), self.journal_dir,
            )  # fmt: skip

    @property
    def closed(self) -> bool:
        return self._closed

    def journaled(self) -> int:
        """Records waiting in this producer's journal_dir, its own and any other's:
        after close(), those the next Producer with this journal_dir sends first."""
        return self._journal.pending_records()

    def stats(self) -> Stats:
        values = self._counters.snapshot()
        return Stats(
            accepted=self._buffer.accepted, buffered=self._buffer.buffered_records(), **values
        )

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's buffer, thread and client.
        The parent still owns (and will send) its records."""
        if self._pid == os.getpid():
            return
        self._journal.forget_after_fork()
        self._sender.forget_after_fork()
        self._setup()


def _check_journal_dir(directory: Path) -> None:
    # Found out now, not during an outage, when records have nowhere else to go.
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(
            f"journal_dir {str(directory)!r} cannot be written: {exc.strerror or exc}",
            setting="journal_dir",
        ) from exc


def _close_all_at_exit() -> None:
    for producer in list(_live):
        if producer._pid == os.getpid():
            try:
                producer.close(timeout=producer.config.exit_flush_timeout)
            except Exception:
                log.exception("flush at exit failed")


_exit_hook_pid: int | None = None


def _close_at_multiprocessing_exit() -> None:
    """A multiprocessing worker leaves through os._exit, which skips atexit, so records
    it buffered were lost at pool.close(); pool.join() or a Process's end. Its own exit
    hook closes the producers too. Registered in the process that sends (the registry
    is emptied in a new worker), and only where multiprocessing is already in use."""
    global _exit_hook_pid
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is None or _exit_hook_pid == os.getpid():
        return
    _exit_hook_pid = os.getpid()
    mp_util.Finalize(None, _close_all_at_exit, exitpriority=10)


def _boto3_client(service: Literal["sqs", "s3"], **config: Any) -> Any:
    """A client that tries each call once (the sender and the offloader retry, with
    backoff) and gives up on a silent endpoint in seconds."""
    import boto3
    from botocore.config import Config as BotoConfig

    once = BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=2, **config)
    return boto3.client(service, config=once)


# A fork waits at most this long for the sender threads to finish their imports: only
# a thread stuck on an import that the forking thread itself holds takes that long.
FORK_WAIT_SECONDS = 5.0


def _hold_imports_before_fork() -> None:
    senders = [p._sender.thread_id for p in list(_live) if p._pid == os.getpid()]
    forksafe.before_fork([ident for ident in senders if ident is not None], FORK_WAIT_SECONDS)


def _reset_all_in_child() -> None:
    forksafe.after_fork_in_child()
    for producer in list(_live):
        producer._after_fork()


atexit.register(_close_all_at_exit)
os.register_at_fork(
    before=_hold_imports_before_fork,
    after_in_parent=forksafe.after_fork_in_parent,
    after_in_child=_reset_all_in_child,
)

__all__ = ["Producer"]
