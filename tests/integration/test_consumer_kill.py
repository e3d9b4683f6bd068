"""SIGKILL the consumer at random moments mid-run, restart it, and check that
MongoDB ends with every record exactly once and the dead-letter queue holds
only the poison this test sent (RELIABILITY_FULL=1: 10 kills, else 3)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from ingest.queues.base import REASON_ATTRIBUTE
from producer import wire
from tests.support.harness import (
    SEED,
    Consumer,
    Ledger,
    crashes,
    pack,
    poison_bodies,
    record_summary,
    running,
    scale,
    send_bodies,
    wait_for_all,
    wait_until,
)
from tests.support.queues import QueuePair, drain_queue

VISIBILITY = 5  # short, so what a killed consumer held comes back soon


def _feed(sqs_client: Any, url: str, ledger: Ledger, stop: threading.Event) -> None:
    """Sends records (packed, some gzip) and poison in waves until the kills are over,
    so every kill lands while the consumer is busy."""
    for wave in range(1000):  # bounded: ~7 minutes at most
        if stop.is_set():
            return
        encoding = wire.GZIP if wave % 3 == 2 else wire.IDENTITY
        bodies = pack(ledger.records(200), per_message=25, encoding=encoding)
        bodies += poison_bodies(ledger, 1)
        send_bodies(sqs_client, url, bodies)
        time.sleep(0.4)  # pacing the feeder's waves, not a wait for anything


def _mixed_message(ledger: Ledger) -> tuple[str, dict[str, dict[str, str]]]:
    """A packed message with one bad line between good ones: the line alone is dead-lettered."""
    good = ledger.records(3)
    bad_line = '{"c": "system.users", "d": {"_id": 1}}'
    lines = [wire.encode_record(c, d) for c, d in good]
    lines.insert(1, bad_line)
    ledger.dead.append(bad_line)
    return wire.join_lines(lines), wire.message_attributes(wire.IDENTITY, 4)


def test_sigkill_mid_run_loses_nothing_and_writes_once(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue: QueuePair = make_queue(visibility_timeout=VISIBILITY, max_receive_count=50)
    ledger = Ledger("events")
    send_bodies(sqs_client, queue.url, [_mixed_message(ledger)])
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "consumer.log", VISIBILITY)
    kills = scale(3, 10)
    rng = random.Random(SEED)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(sqs_client, queue.url, ledger, stop), daemon=True)
    with running([consumer]):
        feeder.start()
        for _ in range(kills):
            # When the kill lands (seeded): at startup (~1 s) or mid-work, on purpose.
            time.sleep(rng.uniform(0.8, 3.5))
            consumer.kill()
            consumer.start()
        stop.set()
        feeder.join(60)
        result = wait_for_all(mongo_db[ledger.collection], ledger, timeout=60 + 6 * VISIBILITY)
        # The last poison may still be held (or due again after a kill) once every record
        # is stored: collect the dead letters while the consumer still runs.
        letters: list[dict[str, Any]] = []

        def all_dead_lettered() -> bool:
            letters.extend(drain_queue(sqs_client, queue.dead_letter_url, wait=0))
            return {m["Body"] for m in letters} >= set(ledger.dead)

        wait_until(all_dead_lettered, 6 * VISIBILITY, 0.5)

    assert consumer.starts == kills + 1
    record_summary(
        faults=kills, crashes=crashes([consumer]), stop_timeouts=consumer.stop_timeouts,
        bad_inputs=len(ledger.dead), **result.as_dict(),
    )  # fmt: skip
    assert result.lost == 0, f"{result.lost} of {result.sent} records lost"
    assert result.duplicates == 0
    assert result.stored == result.sent
    letters += drain_queue(sqs_client, queue.dead_letter_url)
    # A kill between the dead-letter send and the delete can dead-letter a poison twice;
    # what matters is that nothing else lands there and every poison does.
    assert {m["Body"] for m in letters} == set(ledger.dead)
    assert all(REASON_ATTRIBUTE in m["MessageAttributes"] for m in letters)
    assert "Traceback" not in consumer.log_text()
