"""Payloads kept in S3 (claim checks): what the acknowledge stage deletes, and when.

A payload is deleted only after its message was deleted from SQS: until then a
redelivery may still need it (and a consumer killed between the write and the delete
must find it again). It is kept when a dead letter or a resend carries the same
pointer, and with --keep-payloads (a bucket whose own lifecycle rule deletes them).
An object that cannot be deleted is counted and logged with its URL: the bucket's
lifecycle rule is the backstop."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ingest.errors import PayloadUnavailable
from ingest.logs import Throttled
from ingest.metrics import Metrics
from ingest.payloads.base import PayloadRefused, PayloadStore
from ingest.pipeline.messages import Settlement
from ingest.queues.base import Message
from producer import wire

log = logging.getLogger(__name__)
_left_log = Throttled(log, interval=10.0)


class PayloadCleanup:
    def __init__(self, payloads: PayloadStore, metrics: Metrics) -> None:
        self._payloads = payloads
        self._metrics = metrics

    def after_delete(self, settlement: Settlement, deleted: Sequence[Message]) -> None:
        """Deletes the payloads of these messages, just deleted from SQS, that nothing
        sent in their place points to."""
        carried = {letter.body for letter in settlement.dead_letters}
        carried |= {resend.body for resend in settlement.resends}
        for message in deleted:
            if wire.is_pointer(message.attributes) and message.body not in carried:
                self._delete(message)

    def _delete(self, message: Message) -> None:
        try:
            pointer = wire.parse_pointer(message.body)
        except wire.WireError:
            return  # not a pointer after all: it was dead-lettered as unreadable
        try:
            self._payloads.delete(pointer)
        except (PayloadUnavailable, PayloadRefused) as exc:
            self._metrics.payloads_left.inc()
            _left_log.warning(
                f"payload {pointer.url} of deleted message {message.message_id} is left in "
                f"S3 ({exc}): the bucket's lifecycle rule removes it"
            )
            return
        self._metrics.payloads_deleted.inc()
