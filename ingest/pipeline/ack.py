"""Acknowledge stage: ackers take settlements from the outbox, dead-letter what is bad,
delete what is durable, and hand back the rest (later each time it fails)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from ingest.errors import QueueUnavailable
from ingest.flow.retry import RetryPolicy
from ingest.metrics import Metrics
from ingest.pipeline.channels import Outbox
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.messages import Settlement
from ingest.queues.base import DeadLetter, Message, MessageQueue

log = logging.getLogger(__name__)
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
    ) -> None:
        self._queues = queues
        self._inflight = inflight
        self._metrics = metrics
        self._retry = retry_policy

    def apply(self, settlement: Settlement) -> None:
        undelivered = self._dead_letter(settlement.dead_letters)
        deletable = settlement.delete + [
            m for m in settlement.delete_after_dead_letter if m.message_id not in undelivered
        ]
        # A message whose dead letter could not be sent stays in the source queue, to be
        # tried again: never deleted before its bad records are safe elsewhere.
        retry = settlement.retry + [
            m for m in settlement.delete_after_dead_letter if m.message_id in undelivered
        ]
        self._delete(deletable)
        self._inflight.remove(deletable)
        # At its last receive, a message that comes back would be moved by SQS without a
        # reason, good records and all: send it again as a new message instead.
        retry, release = self._requeue_last(retry), self._requeue_last(settlement.release)
        # Let go before they turn visible: a poller that receives them again at once
        # must not take them for a redelivery of messages still held, and drop them.
        self._inflight.remove(retry + release)
        self._change_visibility([(m, self._retry.delay(m.receive_count)) for m in retry])
        self._change_visibility([(m, 0) for m in release])
        self._metrics.messages_released.inc(len(release))
        self._metrics.in_flight.set(len(self._inflight))

    def _requeue_last(self, messages: list[Message]) -> list[Message]:
        """Requeues the messages at their last receive; returns the others (and any
        that could not be requeued: they come back, and SQS may move them)."""
        last = [m for m in messages if m.last_receive]
        if not last:
            return messages
        left = [m for m in messages if not m.last_receive]
        for url, group in _by_queue(last, lambda m: m.queue_url).items():
            failed = self._queues[url].requeue(group)
            self._inflight.remove([m for m in group if m not in failed])
            self._metrics.messages_requeued.inc(len(group) - len(failed))
            if failed:
                log.warning("could not requeue %d messages at their last receive", len(failed))
            left += failed
        return left

    def _dead_letter(self, letters: Sequence[DeadLetter]) -> set[str]:
        """Sends dead letters; returns the ids of source messages not fully dead-lettered."""
        undelivered: set[str] = set()
        for url, group in _by_queue(letters, lambda letter: letter.source.queue_url).items():
            try:
                failed = self._queues[url].dead_letter(group)
            except QueueUnavailable as exc:
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

    def _delete(self, messages: Sequence[Message]) -> None:
        for url, group in _by_queue(messages, lambda m: m.queue_url).items():
            try:
                failed = self._queues[url].delete(group)
            except QueueUnavailable as exc:
                log.warning("delete of %d messages failed: %s", len(group), exc)
                failed = list(group)
            # An undeleted message comes back; its records then collapse as duplicates.
            self._metrics.delete_failures.inc(len(failed))
            self._metrics.messages_deleted.inc(len(group) - len(failed))

    def _change_visibility(self, entries: Sequence[tuple[Message, int]]) -> None:
        for url, group in _by_queue(entries, lambda e: e[0].queue_url).items():
            try:
                self._queues[url].change_visibility(group)
            except QueueUnavailable as exc:
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
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (settlement := self._outbox.get()) is not None:
            try:
                self.acknowledger.apply(settlement)
            except Exception:
                log.exception("acknowledge stage failed; messages will reappear after visibility")


def _by_queue(items: Sequence[T], url_of: Callable[[T], str]) -> dict[str, list[T]]:
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[url_of(item)].append(item)
    return groups


def _reason_label(reason: str) -> str:
    """A low-cardinality label for the metric: the reason's first words."""
    words = _NUMBERS.sub("N", _LINE_PREFIX.sub("", reason)).split()[:4]
    return " ".join(words)[:48] or "unknown"
