"""Messages this process holds: de-duplication by MessageId and the visibility heartbeat."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ingest.queues.base import Message


class InFlight:
    def __init__(self) -> None:
        self._messages: dict[str, Message] = {}
        self._lock = threading.Lock()

    def admit(self, messages: Sequence[Message]) -> tuple[list[Message], int]:
        """Returns the messages not already held, and how many were redeliveries.

        A redelivery of a held message is dropped, but its newer receipt handle is
        kept: SQS only honours the latest handle for deletes."""
        fresh: list[Message] = []
        repeats = 0
        with self._lock:
            for message in messages:
                held = self._messages.get(message.message_id)
                if held is None:
                    self._messages[message.message_id] = message
                    fresh.append(message)
                else:
                    held.receipt_handle = message.receipt_handle
                    held.visible_until = message.visible_until
                    # SQS counted that receive too: the message's last receive is nearer.
                    held.receive_count = max(held.receive_count, message.receive_count)
                    repeats += 1
        return fresh, repeats

    def remove(self, messages: Sequence[Message]) -> None:
        with self._lock:
            for message in messages:
                self._messages.pop(message.message_id, None)

    def expiring(self, within: float) -> list[Message]:
        """Held messages that turn visible again within `within` seconds."""
        horizon = time.monotonic() + within
        with self._lock:
            return [m for m in self._messages.values() if m.visible_until < horizon]

    def all(self) -> list[Message]:
        with self._lock:
            return list(self._messages.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)
