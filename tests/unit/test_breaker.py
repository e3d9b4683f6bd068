"""The breaker on the document store (ingest/flow/breaker.py): it says once that it
opened, probes with backoff on an injected clock, and a store that answers probes but
fails writes keeps the backoff."""

from __future__ import annotations

import itertools
import logging
import threading

import pytest

from ingest.errors import SinkUnavailable
from ingest.flow.breaker import SinkBreaker


def test_the_breaker_says_once_and_probes_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    breaker = SinkBreaker(clock=lambda: now[0])
    pings: list[float] = []

    class Down:
        def ping(self) -> None:
            pings.append(now[0])
            raise SinkUnavailable("MongoDB at db:27017 does not answer: refused")

    caplog.set_level(logging.DEBUG)
    breaker.record_failure("MongoDB at db:27017 does not answer: refused")
    for step in range(241):  # two minutes of the probe job's 0.5 s ticks
        now[0] = step * 0.5
        breaker.probe(Down())
    assert pings == [1, 3, 7, 15, 31, 61, 91]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "MongoDB at db:27017 does not answer: refused; pausing the pollers, "
        "probing every 1-30s until it answers"
    ]
    assert breaker.is_open and breaker.reason == "MongoDB at db:27017 does not answer: refused"


def test_a_store_that_answers_probes_but_fails_writes_keeps_the_backoff() -> None:
    """FerretDB answering a read while its writes hang: each relapse soon after closing
    keeps the longer probe interval, so the write path is not hammered every second."""
    now = [0.0]
    breaker = SinkBreaker(clock=lambda: now[0])
    pings: list[float] = []

    class AnswersReads:
        def ping(self) -> None:
            pings.append(now[0])

    breaker.record_failure("writes time out")
    for step in range(400):
        now[0] = step * 0.5
        breaker.probe(AnswersReads())
        if not breaker.is_open:  # the next write fails at once
            breaker.record_failure("writes time out")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert gaps[:5] == [2, 4, 8, 16, 30] and set(gaps[5:]) == {30}
    now[0] = 1000.0
    breaker.probe(AnswersReads())
    assert not breaker.is_open
    breaker.record_success()  # a write went through: the next failure starts afresh
    now[0] = 1100.0
    breaker.record_failure("again, later")
    now[0] = 1101.0
    breaker.probe(AnswersReads())
    assert pings[-1] == 1101.0


@pytest.mark.timeout(30)
def test_pollers_waiting_on_an_open_breaker_go_on_when_it_closes() -> None:
    breaker = SinkBreaker()
    breaker.record_failure("down")
    assert not breaker.wait_closed(0)
    resumed = threading.Event()

    def poller() -> None:
        while not breaker.wait_closed(timeout=1.0):
            pass
        resumed.set()

    threading.Thread(target=poller, daemon=True).start()
    assert not resumed.is_set()
    breaker.record_success()  # a write went through
    assert resumed.wait(10) and not breaker.is_open and breaker.reason == ""
