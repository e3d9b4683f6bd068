"""A fake SQS that notes which threads call it: a test's proof that send() leaves the
network to the producer's own sender thread, without timing send()."""

from __future__ import annotations

import threading
from typing import Any

from tests.support.producer_fakes import FakeSQS

#: The producer's sender thread (producer/sender.py).
SENDER_THREAD = "sqs-producer"


class WatchedSQS(FakeSQS):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.callers: set[str] = set()  # names of the threads that called, before any gate

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        with self.lock:
            self.callers.add(threading.current_thread().name)
        return super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries)
