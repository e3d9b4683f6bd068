"""Retries, sender faults, the journal and its replay, overflow policies."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from producer import BufferFull, Producer, wire
from producer.journal import REJECTED_FILE, Journal, decode_entry
from tests.support.frames import waiting_in
from tests.support.producer_fakes import (
    DiskFillsUp,
    FakeSQS,
    fail_entries,
    line_item,
    raise_error,
    stalled,
)
from tests.support.waiting import wait_until

URL = "http://sqs.local/000000000000/q"
FAST = {"retry_initial_seconds": 0.001, "retry_max_seconds": 0.01, "probe_seconds": 0.05}


def make(journal: Path, fake: FakeSQS, **options: Any) -> Producer:
    return Producer(URL, sqs_client=fake, journal_dir=journal, **{**FAST, **options})


def numbers(fake: FakeSQS) -> list[int]:
    return [r.document["n"] for r in fake.records()]


def send_many(producer: Producer, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        producer.send("events", {"n": n, "pad": "z" * 100})


def test_entries_failed_without_sender_fault_are_retried(tmp_path: Path) -> None:
    fake = FakeSQS(fail_entries(2), fail_entries(1))
    with make(tmp_path, fake, max_message_bytes=2048, linger_seconds=10) as producer:
        send_many(producer, 40)
        assert producer.flush(5)
        stats = producer.stats()
    assert sorted(numbers(fake)) == list(range(40))
    assert len(numbers(fake)) == 40  # retried entries were not duplicated
    assert stats.retried > 0 and stats.sent == 40 and stats.journaled == 0
    # The retry resends only the entries that failed.
    assert len(fake.calls[1][1]) == 2 and len(fake.calls[2][1]) == 1


def test_throttled_whole_call_is_retried(tmp_path: Path) -> None:
    throttled = ClientError(
        {"Error": {"Code": "ThrottlingException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "SendMessageBatch",
    )
    fake = FakeSQS(raise_error(throttled), raise_error(throttled))
    with make(tmp_path, fake) as producer:
        send_many(producer, 5)
        assert producer.flush(5)
        assert producer.stats().retried == 10
    assert numbers(fake) == list(range(5))


def test_sender_fault_entries_are_surfaced_not_retried(tmp_path: Path) -> None:
    seen: list[tuple[list[str], str]] = []
    fake = FakeSQS(fail_entries(1, sender_fault=True, code="InvalidParameterValue"))
    with make(
        tmp_path, fake, max_message_bytes=2048, on_error=lambda r, why: seen.append((r, why))
    ) as producer:
        send_many(producer, 30)
        assert producer.flush(5)
        stats = producer.stats()
    first = fake.calls[0][1][0]
    first_message_records = len(
        wire.decode_message(first["MessageBody"], first["MessageAttributes"])
    )
    assert stats.failed == first_message_records
    assert len(numbers(fake)) == 30 - first_message_records
    assert len(fake.calls) == 1  # nothing retried
    [(records, reason)] = seen
    assert len(records) == first_message_records and "InvalidParameterValue" in reason
    rejected = (tmp_path / REJECTED_FILE).read_text().splitlines()
    assert [json.loads(line)["record"] for line in rejected] == records
    assert json.loads(rejected[0])["queue"] == URL


def test_retries_exhausted_go_to_the_journal(tmp_path: Path) -> None:
    fake = FakeSQS(*[fail_entries(10)] * 4)
    with make(tmp_path, fake, max_attempts=4, probe_seconds=60) as producer:
        send_many(producer, 3)
        assert producer.flush(5)
        stats = producer.stats()
    assert len(fake.calls) == 4
    assert stats.journaled == 3 and stats.sent == 0
    assert sum(len(p.read_text().splitlines()) for p in tmp_path.glob("*.seg")) == 3


def test_unreachable_sqs_journals_then_a_new_producer_replays_in_order(tmp_path: Path) -> None:
    down = FakeSQS(unreachable={URL})
    with make(tmp_path, down, probe_seconds=60) as producer:
        for chunk in range(5):
            send_many(producer, 100, start=chunk * 100)
            assert producer.flush(5)
        assert producer.stats().journaled == 500
    assert not down.accepted
    up = FakeSQS()
    with make(tmp_path, up) as replayer:
        assert wait_until(lambda: replayer.stats().replayed == 500)
        assert wait_until(lambda: not list(tmp_path.glob("*.seg")))
    assert numbers(up) == list(range(500))


def test_a_journal_dir_shared_by_producers_of_two_queues_sends_each_record_to_its_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Once, the next Producer on a journal_dir replayed whatever it found: records
    journaled for one queue went to another (and so, perhaps, to another database)."""
    other = "http://sqs.local/000000000000/other"
    down = FakeSQS(unreachable={URL})
    with make(tmp_path, down, probe_seconds=60) as producer:
        send_many(producer, 20)
        assert producer.flush(5)
        assert producer.stats().journaled == 20
    up = FakeSQS()
    with Producer(other, sqs_client=up, journal_dir=tmp_path) as neighbour:
        neighbour.send("events", {"n": 1000})
        assert neighbour.flush(5)
        assert neighbour.stats().replayed == 0
    assert [r.document["n"] for r in up.records(other)] == [1000] and up.records(URL) == []
    assert "1 journal segments in" in caplog.text and "are for other queues" in caplog.text
    with make(tmp_path, up) as owner:
        assert wait_until(lambda: owner.stats().replayed == 20)
    assert [r.document["n"] for r in up.records(URL)] == list(range(20))


def test_journal_replays_in_the_same_producer_when_sqs_recovers(tmp_path: Path) -> None:
    fake = FakeSQS(unreachable={URL})
    with make(tmp_path, fake, breaker_reset_seconds=0.05) as producer:
        send_many(producer, 50)
        assert producer.flush(5)
        assert producer.stats().journaled == 50
        fake.unreachable.clear()
        send_many(producer, 10, start=50)
        assert producer.flush(5)
        assert wait_until(lambda: producer.stats().replayed == 50)
    assert sorted(numbers(fake)) == list(range(60))
    assert not list(tmp_path.glob("*.seg"))


def test_crashed_process_segments_are_replayed_at_start(tmp_path: Path) -> None:
    crashed = Journal(tmp_path)
    crashed.append([line_item(f'{{"c":"e","d":{{"_id":{n},"n":{n}}}}}') for n in range(7)])
    # A partial last line: the crashed writer died mid-write.
    with open(next(tmp_path.glob("*.seg")), "a") as segment:
        segment.write('[null,null]\t{"c":"e","d":{"_id":7,')
    crashed.seal()  # the kernel drops a dead process's flock
    fake = FakeSQS()
    with make(tmp_path, fake) as producer:
        assert wait_until(lambda: producer.stats().replayed == 7)
    assert numbers(fake) == list(range(7))


def test_a_segment_locked_by_a_live_writer_is_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = Journal(tmp_path)
    writer.append([line_item('{"c":"e","d":{"_id":1,"n":1}}')])
    claims: list[object] = []
    claim = Journal.claim

    def watched(journal: Journal) -> object:
        claims.append(found := claim(journal))
        return found

    monkeypatch.setattr(Journal, "claim", watched)
    fake = FakeSQS()
    with make(tmp_path, fake) as producer:
        # The replayer looked for a segment to replay, twice, and found it locked.
        assert wait_until(lambda: len(claims) >= 2)
        assert claims[:2] == [None, None]
        assert producer.stats().replayed == 0 and fake.calls == []
        writer.seal()
        assert wait_until(lambda: producer.stats().replayed == 1)
    assert numbers(fake) == [1]


def test_replay_stops_when_sqs_fails_again_and_resumes_later(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for n in range(3):
        journal.append([line_item(f'{{"c":"e","d":{{"_id":{n},"n":{n}}}}}')])
    journal.seal()
    fake = FakeSQS(unreachable={URL})
    with make(tmp_path, fake, breaker_reset_seconds=0.05) as producer:
        assert wait_until(lambda: len(fake.calls) >= 2)
        assert list(tmp_path.glob("*.seg")), "segment deleted before its records were sent"
        fake.unreachable.clear()
        assert wait_until(lambda: producer.stats().replayed == 3)
    assert numbers(fake) == [0, 1, 2]


def test_overflow_raise(tmp_path: Path) -> None:
    fake = FakeSQS()
    options = {"max_buffered_bytes": 1024, "max_message_bytes": 1024, "overflow": "raise"}
    with stalled(fake, make(tmp_path, fake, **options)) as producer, pytest.raises(BufferFull):
        send_many(producer, 20)


def test_overflow_block_waits_then_raises(tmp_path: Path) -> None:
    fake = FakeSQS()
    options = {"max_buffered_bytes": 1024, "max_message_bytes": 1024, "overflow": "block"}
    full = r"^buffer still full \(1024 bytes\) after 0.2s$"  # it waited for room, then gave up
    with (
        stalled(fake, make(tmp_path, fake, block_timeout=0.2, **options)) as producer,
        pytest.raises(BufferFull, match=full),
    ):
        send_many(producer, 20)


@pytest.mark.timeout(60)
def test_a_blocked_send_goes_through_when_the_sender_frees_room(tmp_path: Path) -> None:
    fake = FakeSQS()
    options = {"max_buffered_bytes": 1024, "max_message_bytes": 1024, "overflow": "block"}
    with stalled(fake, make(tmp_path, fake, block_timeout=60, **options)) as producer:
        sending = threading.Thread(target=send_many, args=(producer, 20))
        sending.start()
        # The buffer is full and SQS hangs: send() waits for room.
        assert wait_until(lambda: waiting_in(sending.ident, "put_waiting"))
        assert producer.stats().accepted < 20
        assert fake.gate is not None
        fake.gate.set()  # SQS answers: the sender frees room
        sending.join(30)
        assert not sending.is_alive() and producer.stats().accepted == 20
        assert producer.flush(10)
    assert sorted(numbers(fake)) == list(range(20)) and producer.stats().journaled == 0


def test_overflow_journal_spills_and_replays(tmp_path: Path) -> None:
    fake = FakeSQS()
    producer = make(tmp_path, fake, max_buffered_bytes=1024, max_message_bytes=1024)
    with stalled(fake, producer):
        send_many(producer, 20)  # never raises: what does not fit goes to the journal
        assert producer.stats().journaled > 0
        assert fake.gate is not None
        fake.gate.set()
        assert producer.flush(5)
        assert wait_until(lambda: len(numbers(fake)) == 20)
    assert sorted(numbers(fake)) == list(range(20))


def test_a_full_journal_loses_only_what_it_could_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lost: list[int] = []

    def on_error(lines: list[str], reason: str) -> None:
        lost.extend(json.loads(line)["d"]["n"] for line in lines)

    monkeypatch.setattr(os, "write", DiskFillsUp(tmp_path, room=20_000))
    down = FakeSQS(unreachable={URL})
    with make(tmp_path, down, probe_seconds=60, wire_format=1, on_error=on_error) as producer:
        for chunk in range(3):
            send_many(producer, 100, start=chunk * 100)
            assert producer.flush(5)
    stats = producer.stats()
    on_disk = [json.loads(r.record)["d"]["n"] for r in journaled(tmp_path)]
    assert 0 < len(on_disk) < 300
    assert stats.journaled == len(on_disk)
    assert stats.failed == len(lost) == 300 - len(on_disk)
    assert sorted(on_disk + lost) == list(range(300))
    told = [r for r in caplog.records if "refused records" in r.getMessage()]
    assert told and sum(int(r.args[2]) for r in told) == len(lost)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []  # no traceback


def journaled(directory: Path) -> list[Any]:
    data = b"".join(path.read_bytes() for path in Journal(directory).segments())
    assert not data or data.endswith(b"\n")
    return [decode_entry(text) for text in data.decode().splitlines()]


@pytest.mark.timeout(60)  # a close() that ignored its timeout would hang here
def test_close_timeout_journals_what_is_unsent(tmp_path: Path) -> None:
    fake = FakeSQS()
    fake.gate = threading.Event()  # SQS hangs
    producer = make(tmp_path, fake, probe_seconds=60)
    send_many(producer, 25)
    try:
        producer.close(timeout=0.3)  # returns while SQS still hangs
        assert not fake.gate.is_set() and producer.closed
        lines = sum(len(p.read_text().splitlines()) for p in tmp_path.glob("*.seg"))
        assert lines == 25
        assert producer.stats().journaled == 25
    finally:
        fake.gate.set()


def test_botocore_connection_error_goes_to_the_journal_without_retries(tmp_path: Path) -> None:
    fake = FakeSQS(*[raise_error(EndpointConnectionError(endpoint_url=URL))] * 10)
    with make(tmp_path, fake, probe_seconds=60) as producer:
        send_many(producer, 3)
        assert producer.flush(5)
        assert producer.stats().journaled == 3 and producer.stats().retried == 0
    assert len(fake.calls) == 1


def test_whole_call_refused_as_malformed_is_rejected_not_journaled(tmp_path: Path) -> None:
    malformed = ClientError(
        {
            "Error": {"Code": "AWS.SimpleQueueService.BatchRequestTooLong"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "SendMessageBatch",
    )
    seen: list[str] = []
    fake = FakeSQS(raise_error(malformed))
    with make(tmp_path, fake, on_error=lambda records, why: seen.append(why)) as producer:
        send_many(producer, 4)
        assert producer.flush(5)
        stats = producer.stats()
    assert (stats.failed, stats.journaled, stats.retried) == (4, 0, 0)
    assert seen and "BatchRequestTooLong" in seen[0]
    assert len((tmp_path / REJECTED_FILE).read_text().splitlines()) == 4


def test_missing_queue_journals_for_later(tmp_path: Path) -> None:
    missing = ClientError(
        {
            "Error": {"Code": "AWS.SimpleQueueService.NonExistentQueue"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "SendMessageBatch",
    )
    fake = FakeSQS(raise_error(missing))
    with make(tmp_path, fake, probe_seconds=60) as producer:
        send_many(producer, 4)
        assert producer.flush(5)
        assert producer.stats().journaled == 4 and producer.stats().failed == 0


def test_bad_partition_keys_are_refused_in_send(tmp_path: Path) -> None:
    from producer import WireError

    with make(tmp_path, FakeSQS()) as producer:
        for key in ("", "has space", "x" * 129, "é"):
            with pytest.raises(WireError, match="partition_key"):
                producer.send("events", {}, partition_key=key)
        producer.send("events", {}, partition_key="user-1:a/b")


def test_a_producer_closed_at_once_still_replays_what_an_earlier_run_journaled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cron job or a one-off script lives shorter than a journal probe: the journal
    an earlier run left is sent at close(), not left for a later, longer process."""
    with make(tmp_path, FakeSQS(unreachable={URL}), probe_seconds=60) as down:
        send_many(down, 50)
    caplog.clear()
    with caplog.at_level("INFO", logger="producer"):
        up = FakeSQS()
        make(tmp_path, up, probe_seconds=60).close()  # no send(), no wait
    assert numbers(up) == list(range(50))
    assert not list(tmp_path.glob("*.seg"))
    assert any("50 journaled records" in r.getMessage() for r in caplog.records)


def test_records_left_in_the_journal_at_close_are_counted_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level("WARNING", logger="producer"),
        make(tmp_path, FakeSQS(unreachable={URL})) as producer,
    ):
        send_many(producer, 7)
    (warning,) = [r.getMessage() for r in caplog.records if "stay in the journal" in r.getMessage()]
    assert warning.startswith(f"7 records stay in the journal at {tmp_path}")
