"""--exit-when-idle: stop once nothing has been received, written or held for a while."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from ingest.errors import QUEUE_CALL_FAILED
from ingest.pipeline.channels import Inbox
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.receive import ReceiveStage
from ingest.pipeline.write import WriteStage
from ingest.queues.base import MessageQueue

log = logging.getLogger(__name__)


class IdleWatch:
    def __init__(
        self,
        idle_seconds: float,
        queues: Mapping[str, MessageQueue],
        receive: ReceiveStage,
        inbox: Inbox,
        write: WriteStage,
        inflight: InFlight,
        stop: Callable[[], None],
    ) -> None:
        self._idle_seconds = idle_seconds
        self._queues = queues
        self._receive = receive
        self._inbox = inbox
        self._write = write
        self._inflight = inflight
        self._stop = stop
        self._active_at = time.monotonic()

    def is_idle(self) -> bool:
        return (
            not self._write.busy
            and not self._receive.receiving
            and self._inbox.empty()
            and not len(self._inflight)
        )

    def check(self) -> None:
        """The periodic job."""
        if not self.is_idle():
            self._active_at = time.monotonic()
            return
        idle_for = time.monotonic() - max(self._active_at, self._write.last_activity)
        if idle_for < self._idle_seconds or self._queues_hold_visible_messages():
            return  # (pollers may just be slow to get to visible messages on a busy machine)
        log.info("idle for %.1fs: stopping", idle_for)
        self._stop()

    def _queues_hold_visible_messages(self) -> bool:
        try:
            return any(source.depth().visible for source in self._queues.values())
        except QUEUE_CALL_FAILED:
            return False
