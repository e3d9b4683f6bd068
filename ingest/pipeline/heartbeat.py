"""The visibility heartbeat: a batch still being worked on keeps its messages invisible."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ingest.errors import QUEUE_CALL_FAILED
from ingest.metrics import Metrics
from ingest.pipeline.inflight import InFlight
from ingest.queues.base import Message, MessageQueue

log = logging.getLogger(__name__)


class VisibilityHeartbeat:
    def __init__(
        self,
        queues: Mapping[str, MessageQueue],
        inflight: InFlight,
        visibility_timeout: int,
        metrics: Metrics,
    ) -> None:
        self._queues = queues
        self._inflight = inflight
        self._timeout = visibility_timeout
        self._metrics = metrics

    @property
    def interval(self) -> float:
        return max(1.0, self._timeout / 6)

    def beat(self) -> None:
        """Extends every held message that turns visible within half a timeout."""
        by_queue: dict[str, list[tuple[Message, int]]] = {}
        for message in self._inflight.expiring(within=self._timeout / 2):
            by_queue.setdefault(message.queue_url, []).append((message, self._timeout))
        for url, entries in by_queue.items():
            try:
                failed = {m.message_id for m in self._queues[url].change_visibility(entries)}
            except QUEUE_CALL_FAILED as exc:
                log.warning("visibility heartbeat failed: %s", exc)
                continue
            now = time.monotonic()
            for message, _ in entries:
                if message.message_id not in failed:
                    message.visible_until = now + self._timeout
            self._metrics.visibility_extended.inc(len(entries) - len(failed))
