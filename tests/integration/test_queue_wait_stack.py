"""The queue-wait histogram on the real SQS (ElasticMQ): a message that waited about
two seconds before a poller received it is observed as about two seconds, from SQS's
own SentTimestamp (the sender's clock plays no part)."""

from __future__ import annotations

import time
from typing import Any

from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.channels import Inbox, Outbox
from ingest.pipeline.inflight import InFlight
from ingest.pipeline.receive import Poller, ReceiveOptions, Wiring
from ingest.queues import sqs


def test_a_poller_observes_how_long_each_message_waited_in_sqs(
    make_queue: Any, sqs_client: Any
) -> None:
    queue = make_queue()
    for n in range(3):
        sqs_client.send_message(QueueUrl=queue.url, MessageBody=f"waiting {n}")
    time.sleep(2.0)  # the wait being measured: the messages sit in SQS for 2 s at least
    source = sqs.connect(read_timeout=11).queue(queue.url)
    metrics = Metrics()
    wiring = Wiring(Inbox(4), Outbox(), InFlight(), SinkBreaker(), metrics,
                    ReceiveOptions(wait_seconds=1))  # fmt: skip
    poller = Poller(source, wiring, "p")
    received = 0
    deadline = time.monotonic() + 20
    while received < 3 and time.monotonic() < deadline:
        received += poller.poll_once()
    assert received == 3
    count = metrics.registry.get_sample_value("ingest_queue_wait_seconds_count")
    total = metrics.registry.get_sample_value("ingest_queue_wait_seconds_sum")
    assert count == 3 and total is not None
    assert 3 * 1.5 <= total <= 3 * 20, total  # SentTimestamp has millisecond precision
