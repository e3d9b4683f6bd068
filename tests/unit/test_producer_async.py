"""AsyncProducer: the same pipeline, awaitable flush and close."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from producer import AsyncProducer, ProducerClosed
from tests.support.producer_fakes import FakeSQS
from tests.support.watched_sqs import SENDER_THREAD, WatchedSQS

URL = "http://sqs.local/000000000000/q"


def test_async_producer_sends_and_flushes(tmp_path: Path) -> None:
    fake = WatchedSQS()

    async def main() -> None:
        async with AsyncProducer(URL, sqs_client=fake, journal_dir=tmp_path, linger_seconds=5) as p:
            ids = [p.send("events", {"n": n}) for n in range(100)]
            assert len(set(ids)) == 100 and fake.calls == []  # nothing sent on the loop's thread
            assert await p.flush(5)
            assert p.stats().sent == 100
        with pytest.raises(ProducerClosed):
            p.send("events", {})

    asyncio.run(main())
    assert [r.document["n"] for r in fake.records()] == list(range(100))
    assert fake.callers == {SENDER_THREAD}


@pytest.mark.timeout(60)
def test_flush_does_not_block_the_event_loop(tmp_path: Path) -> None:
    fake = FakeSQS()
    fake.gate = threading.Event()

    async def main() -> None:
        producer = AsyncProducer(URL, sqs_client=fake, journal_dir=tmp_path)
        producer.send("events", {"n": 1})
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                if ticks == 10:  # only a loop that keeps running while flush waits gets here
                    fake.gate.set()
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        assert await producer.flush(30)
        task.cancel()
        assert ticks >= 10 and fake.gate.is_set()
        await producer.close()

    asyncio.run(main())


def test_block_overflow_is_refused_for_asyncio(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="event loop"):
        AsyncProducer(URL, sqs_client=FakeSQS(), journal_dir=tmp_path, overflow="block")
