"""Acknowledge stage: ackers take settlements from the outbox and carry them out against
the queues: dead letters and resends first, then the deletes they allow, then the
visibility changes. What to do with each message is decided in settle.py; here only
what SQS did is followed: a message whose dead letters or resends were not all taken
is not deleted, and comes back later. A payload kept in S3 is deleted after its message
(claims.py says which)."""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from ingest.errors import QUEUE_CALL_FAILED
from ingest.flow.retry import RetryPolicy
from ingest.logs import Tracebacks
from ingest.metrics import Metrics
from ingest.pipeline.channels import Outbox
from ingest.pipeline.claims import PayloadCleanup
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.messages import Settlement
from ingest.pipeline.threads import join_by
from ingest.queues.base import DeadLetter, Message, MessageQueue, Resend

log = logging.getLogger(__name__)
_tracebacks = Tracebacks(log)
T = TypeVar("T")
_LINE_PREFIX = re.compile(r"^line \d+: ")
_NUMBERS = re.compile(r"\d+")


class Acknowledger:
    """Applies one settlement to the queues."""

    def __init__(
        self,
        queues: Mapping[str, MessageQueue],
        inflight: InFlight,
        metrics: Metrics,
        retry_policy: RetryPolicy,
        payloads: PayloadCleanup | None = None,
    ) -> None:
        self._queues = queues
        self._inflight = inflight
        self._metrics = metrics
        self._retry = retry_policy
        self._payloads = payloads  # None: payloads are kept (--keep-payloads)

    def apply(self, settlement: Settlement) -> None:
        unsent = self._dead_letter(settlement.dead_letters) | self._resend(settlement.resends)
        after = settlement.delete_after_sends
        deletable = settlement.delete + [m for m in after if m.message_id not in unsent]
        # Never deleted before what was sent in its place is safe: it comes back instead.
        stuck = [(m, self._retry.delay(m.receive_count)) for m in after if m.message_id in unsent]
        undeleted = self._delete(deletable)
        self._inflight.remove(deletable)
        if self._payloads is not None:  # only now: a redelivery must find its payload
            self._payloads.after_delete(settlement, [m for m in deletable if m not in undeleted])
        retry, release = settlement.retry + stuck, settlement.release
        # Let go before they turn visible: a poller that receives them again at once
        # must not take them for a redelivery of messages still held, and drop them.
        self._inflight.remove([m for m, _ in retry] + release)
        self._change_visibility(retry)
        self._change_visibility([(m, 0) for m in release])
        self._metrics.messages_released.inc(len(release))
        self._metrics.in_flight.set(len(self._inflight))

    def report(self, exc: Exception) -> None:
        self._metrics.internal_errors.labels("acknowledge").inc()
        _tracebacks.report(
            "acknowledge", exc, "acknowledge stage failed; its messages reappear after visibility"
        )

    def let_go(self, settlement: Settlement) -> None:
        """After a failure to apply it: the messages are no longer held (so the heartbeat
        stops extending them) and come back when their visibility runs out."""
        self._inflight.remove(settlement.messages())
        self._metrics.in_flight.set(len(self._inflight))

    def _dead_letter(self, letters: Sequence[DeadLetter]) -> set[str]:
        """Sends dead letters; returns the ids of source messages not fully dead-lettered."""
        undelivered: set[str] = set()
        for url, group in _by_queue(letters, lambda letter: letter.source.queue_url).items():
            try:
                failed = self._queues[url].dead_letter(group)
            except QUEUE_CALL_FAILED as exc:
                log.warning("dead-letter send failed: %s", exc)
                failed = list(group)
            undelivered.update(letter.source.message_id for letter in failed)
            for letter in group:
                if letter.source.message_id not in undelivered:
                    self._metrics.records_dead_lettered.labels(_reason_label(letter.reason)).inc()
                    log.info(
                        "dead-lettered from message %s: %s", letter.source.message_id, letter.reason
                    )
        return undelivered

    def _resend(self, resends: Sequence[Resend]) -> set[str]:
        """Sends what goes back in place of a message; returns the ids of the sources
        whose resends were not all taken."""
        unsent: set[str] = set()
        for url, group in _by_queue(resends, lambda resend: resend.source.queue_url).items():
            try:
                failed = self._queues[url].resend(group)
            except QUEUE_CALL_FAILED as exc:
                log.warning("resending %d messages failed: %s", len(group), exc)
                failed = list(group)
            unsent.update(resend.source.message_id for resend in failed)
            self._metrics.messages_requeued.inc(len(group) - len(failed))
        return unsent

    def _delete(self, messages: Sequence[Message]) -> list[Message]:
        """Deletes the messages; returns those SQS did not delete."""
        undeleted: list[Message] = []
        for url, group in _by_queue(messages, lambda m: m.queue_url).items():
            try:
                failed = self._queues[url].delete(group)
            except QUEUE_CALL_FAILED as exc:
                log.warning("delete of %d messages failed: %s", len(group), exc)
                failed = list(group)
            # An undeleted message comes back; its records then collapse as duplicates.
            self._metrics.delete_failures.inc(len(failed))
            self._metrics.messages_deleted.inc(len(group) - len(failed))
            undeleted += failed
        return undeleted

    def _change_visibility(self, entries: Sequence[tuple[Message, int]]) -> None:
        for url, group in _by_queue(entries, lambda e: e[0].queue_url).items():
            try:
                self._queues[url].change_visibility(group)
            except QUEUE_CALL_FAILED as exc:
                # The message turns visible when its timeout runs out anyway.
                log.warning("visibility change of %d messages failed: %s", len(group), exc)


class AckStage:
    """The ackers: each owns its thread and takes settlements from the outbox."""

    def __init__(self, outbox: Outbox, acknowledger: Acknowledger, ackers: int) -> None:
        self._outbox = outbox
        self.acknowledger = acknowledger
        self._threads = [
            threading.Thread(target=self._run, name=f"acker-{n}", daemon=True)
            for n in range(ackers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Each acker stops after the settlements already in the outbox."""
        self._outbox.close(len(self._threads))

    def join(self, deadline: float) -> None:
        join_by(self._threads, deadline)

    def _run(self) -> None:
        while (settlement := self._outbox.get()) is not None:
            try:
                self.acknowledger.apply(settlement)
            except Exception as exc:  # nothing is lost: what was not deleted comes back
                self.acknowledger.let_go(settlement)
                self.acknowledger.report(exc)


def _by_queue(items: Sequence[T], url_of: Callable[[T], str]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[url_of(item)].append(item)
    return groups


def _reason_label(reason: str) -> str:
    """A low-cardinality label for the metric: the reason's first words."""
    words = _NUMBERS.sub("N", _LINE_PREFIX.sub("", reason)).split()[:4]
    return " ".join(words)[:48] or "unknown"
