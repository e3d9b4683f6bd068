"""The journal on its own: entry format, fsync policy, one replayer per segment."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from producer import Producer
from producer.journal import (
    Journal,
    JournalWriteError,
    decode_entry,
    default_journal_dir,
    encode_entry,
)
from tests.support.producer_fakes import DiskFillsUp, FakeSQS, line_item
from tests.support.waiting import wait_until

URL = "http://sqs.local/000000000000/q"


def line(n: int) -> str:
    return f'{{"c":"e","d":{{"_id":{n},"n":{n},"s":"tab\\there"}}}}'


def test_entries_keep_partition_key_and_id_key() -> None:
    item = line_item(line(1), "user\t7", "int:1")
    assert decode_entry(encode_entry(item)) == item
    assert decode_entry(encode_entry(line_item(line(2)))) == line_item(line(2))


def test_default_dir_follows_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    first = default_journal_dir([URL])
    assert first.parent == tmp_path / "sqs-mongo-ingest" / "journal"
    assert default_journal_dir([URL, URL + "2"]) != first


@pytest.mark.parametrize(("policy", "expect_fsync"), [("always", True), ("never", False)])
def test_fsync_policy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, policy: str, expect_fsync: bool
) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    journal = Journal(tmp_path, fsync=policy)
    journal.append([line_item(line(1))])
    journal.append([line_item(line(2)), line_item(line(3))])
    assert bool(calls) is expect_fsync
    if expect_fsync:
        assert len(calls) >= 2  # every append, plus the new segment's directory entry
    journal.seal()


def test_segments_roll_over_at_the_size_limit(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=200)
    for n in range(10):
        journal.append([line_item(line(n))])
    journal.seal()
    segments = journal.segments()
    assert len(segments) > 2
    replayed = []
    while (reader := journal.claim()) is not None:
        items, bad, _ = reader.read_chunk(10**6)
        assert not bad
        replayed.extend(items)
        reader.finish()
    assert [item.record for item in replayed] == [line(n) for n in range(10)]


def test_a_claimed_segment_cannot_be_claimed_twice(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([line_item(line(1))])
    journal.seal()
    first = journal.claim()
    assert first is not None
    assert Journal(tmp_path).claim() is None  # locked by the first replayer
    first.finish()
    assert Journal(tmp_path).claim() is None and not journal.segments()


def test_two_producers_sharing_a_journal_replay_each_record_once(tmp_path: Path) -> None:
    writer = Journal(tmp_path, segment_bytes=2000)
    for n in range(300):
        writer.append([line_item(line(n))])
    writer.seal()
    fakes = [FakeSQS(), FakeSQS()]
    producers = [Producer(URL, sqs_client=f, journal_dir=tmp_path) for f in fakes]
    try:
        assert wait_until(lambda: not writer.segments())
    finally:
        for producer in producers:
            producer.close()
    got = [r.document["n"] for fake in fakes for r in fake.records()]
    assert sorted(got) == list(range(300))
    assert sum(p.stats().replayed for p in producers) == 300


def test_format_2_entries_keep_collection_trace_and_bytes() -> None:
    from producer.encode import Encoder

    item, _ = Encoder("2").item("audit", {"_id": 7, "v": "ü"}, "user-7", "00-ab-cd-01")
    again = decode_entry(encode_entry(item))
    assert again == item and isinstance(again.record, bytes)


def whole_lines(journal: Journal) -> list[str | bytes]:
    data = b"".join(path.read_bytes() for path in journal.segments())
    assert not data or data.endswith(b"\n"), "a torn line was left"
    return [decode_entry(text).record for text in data.decode().splitlines()]


def test_a_write_cut_short_keeps_the_whole_lines_and_says_how_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)
    journal.append([line_item(line(0))])
    entry = len(encode_entry(line_item(line(1))))
    full = DiskFillsUp(tmp_path, room=2 * entry + entry // 2)  # room for 2.5 more lines
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(JournalWriteError) as refused:
        journal.append([line_item(line(n)) for n in range(1, 6)])
    assert refused.value.written == 2 and refused.value.error.errno == errno.ENOSPC
    assert whole_lines(journal) == [line(n) for n in range(3)]  # the torn third is cut off
    with pytest.raises(JournalWriteError) as again:
        journal.append([line_item(line(9))])
    assert again.value.written == 0
    full.room = 10**6  # space again: appends go on, after the whole lines
    journal.append([line_item(line(3))])
    journal.seal()
    assert whole_lines(journal) == [line(n) for n in range(4)]


def test_replay_goes_on_when_its_progress_cannot_be_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal(tmp_path)
    for n in range(5):
        journal.append([line_item(line(n))])
    journal.seal()

    def disk_full(path: Path, text: str) -> int:
        path.touch()  # the file is created, its bytes find no room
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", disk_full)
    reader = journal.claim()
    assert reader is not None
    replayed = []
    while True:
        items, _, offset = reader.read_chunk(1)
        if not items:
            break
        replayed.extend(item.record for item in items)
        reader.commit(offset)  # the mark cannot be written: replay carries on
    reader.finish()
    assert replayed == [line(n) for n in range(5)]
    assert list(tmp_path.iterdir()) == []  # no segment, no mark, no temporary file
    warnings = [r for r in caplog.records if "cannot mark replay progress" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is None
