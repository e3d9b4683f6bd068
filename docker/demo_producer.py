"""Sends synthetic user-operation records through producer.Producer, continuously.

Environment: INGEST_QUEUE_URL (required), DEMO_RATE (records per second, default 100),
DEMO_COLLECTION (default "operations"), DEMO_HEARTBEAT (a file touched every second,
for the container's health check; default /tmp/demo-producer.alive)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producer import Producer

OPERATIONS = ("login", "logout", "view", "click", "search", "add_to_cart", "checkout")
PATHS = ("/", "/search", "/product/42", "/cart", "/account", "/checkout")


def operation(rng: random.Random) -> dict[str, Any]:
    return {
        "user": f"user-{rng.randrange(10_000)}",
        "op": rng.choice(OPERATIONS),
        "path": rng.choice(PATHS),
        "ms": round(rng.lognormvariate(3.5, 0.8), 1),
        "at": datetime.now(UTC),
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rate = float(os.environ.get("DEMO_RATE", "100"))
    collection = os.environ.get("DEMO_COLLECTION", "operations")
    heartbeat = Path(os.environ.get("DEMO_HEARTBEAT", "/tmp/demo-producer.alive"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    producer = Producer(os.environ["INGEST_QUEUE_URL"], journal_dir="/tmp/producer-journal")
    rng = random.Random()
    tick = 0.1  # send rate/10 records every 100 ms
    sent, due, last_beat = 0, time.monotonic(), 0.0
    try:
        while not stop.is_set():
            for _ in range(max(1, round(rate * tick))):
                producer.send(collection, operation(rng))
                sent += 1
            due += tick
            if time.monotonic() - last_beat >= 1.0:
                heartbeat.touch()
                last_beat = time.monotonic()
                logging.info("sent %d records; %s", sent, producer.stats())
            stop.wait(max(0.0, due - time.monotonic()))
    finally:
        producer.close()
        # The last line: what was accepted and what reached SQS (make container-check reads it).
        logging.info("stopped: %s", json.dumps(producer.stats().as_dict()))


if __name__ == "__main__":
    main()
