"""Backfill readers: formats, gzip, folders, positions and bad lines."""

from __future__ import annotations

import gzip
import struct
from datetime import datetime
from pathlib import Path

import bson
import pytest
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from ingest.errors import ReaderError
from ingest.tools.readers import BadLine, SourceDocument, discover, read


def _items(path: Path) -> list[SourceDocument | BadLine]:
    (source,) = discover(path)
    return list(read(source))


def test_json_lines_keep_extended_json_and_report_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    oid = ObjectId()
    path.write_text(
        f'{{"_id": {{"$oid": "{oid}"}}, "at": {{"$date": "2024-05-01T00:00:00Z"}}}}\n'
        "\n"
        "[1, 2]\n"
        "{broken\n"
        '{"n": 4}\n'
    )
    items = _items(path)
    assert [type(i).__name__ for i in items] == [
        "SourceDocument",
        "BadLine",
        "BadLine",
        "SourceDocument",
    ]
    first = items[0]
    assert isinstance(first, SourceDocument)
    assert first.document["_id"] == oid
    assert first.document["at"] == datetime(2024, 5, 1)
    assert [i.position for i in items] == [1, 3, 4, 5]  # blank line 2 skipped, numbering kept
    bad = items[2]
    assert isinstance(bad, BadLine) and bad.text == "{broken" and "Extended JSON" in bad.reason


def test_gzipped_json_lines_read_like_plain(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"n": 1}\n{"n": 2}\n'))
    assert [i.document for i in _items(path) if isinstance(i, SourceDocument)] == [
        {"n": 1},
        {"n": 2},
    ]


def test_truncated_gzip_reports_where_reading_stopped(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    data = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(5000)))
    path.write_bytes(data[: len(data) // 2])
    items = _items(path)
    assert isinstance(items[-1], BadLine) and "cannot be read further" in items[-1].reason
    assert all(isinstance(i, SourceDocument) for i in items[:-1])


def test_csv_rows_with_line_positions_and_object_ids(tmp_path: Path) -> None:
    oid = ObjectId()
    path = tmp_path / "t.csv"
    path.write_text(f'_id,name,note\n{oid},ann,"two\nlines"\n,bob,\nx,y\n')
    items = _items(path)
    first, second, third = items
    assert isinstance(first, SourceDocument) and first.document == {
        "_id": oid, "name": "ann", "note": "two\nlines"
    }  # fmt: skip
    assert first.position == 2
    assert isinstance(second, SourceDocument) and second.document == {"name": "bob"}
    assert second.position == 4  # the row after a two-line row starts on line 4
    assert isinstance(third, BadLine) and third.position == 5 and "2 fields" in third.reason


def _dump_with_a_corrupt_document(tmp_path: Path) -> Path:
    good = [bson.encode({"_id": i, "v": "x" * i}) for i in range(3)]
    corrupt = struct.pack("<i", 12) + b"\x7f" + b"ab\x00" + b"\x00\x00\x00\x00"  # bad type byte
    path = tmp_path / "users.bson"
    path.write_bytes(good[0] + corrupt + good[1] + good[2] + struct.pack("<i", -5))
    return path


def test_bson_dump_hands_documents_on_as_bytes_and_stops_at_a_broken_length(
    tmp_path: Path,
) -> None:
    """The documents are not decoded (the producer sends them as they are); a length
    prefix that makes no sense ends the file, and says so."""
    items = _items(_dump_with_a_corrupt_document(tmp_path))
    documents = [i.document for i in items if isinstance(i, SourceDocument)]
    assert all(isinstance(d, RawBSONDocument) for d in documents) and len(documents) == 4
    (bad,) = [i for i in items if isinstance(i, BadLine)]
    assert bad.position == 5 and "corrupt length" in bad.reason


def test_a_dry_run_finds_the_corrupt_document_in_a_dump(tmp_path: Path) -> None:
    from ingest.tools.backfill import Backfill, Options

    path = _dump_with_a_corrupt_document(tmp_path)
    options = Options(
        path=path, checkpoint=tmp_path / "cp", queue_url="", dry_run=True, progress=False
    )
    lines: list[str] = []
    report = Backfill(options, None, echo=lines.append).run()
    assert (report.sent, report.bad_lines) == (3, 2)
    assert any("users.bson:2: document is not valid BSON" in line for line in lines), lines


def test_folder_discovery_names_sources_relative_and_skips_metadata(tmp_path: Path) -> None:
    (tmp_path / "dump" / "shop").mkdir(parents=True)
    (tmp_path / "dump" / "shop" / "orders.bson.gz").write_bytes(
        gzip.compress(bson.encode({"a": 1}))
    )
    (tmp_path / "dump" / "shop" / "orders.metadata.json").write_text("{}")
    (tmp_path / "dump" / "notes.txt").write_text("ignored")
    (tmp_path / "dump" / "a.ndjson").write_text('{"x": 1}\n')
    files = discover(tmp_path / "dump")
    assert [f.source_id for f in files] == ["a.ndjson", "shop/orders.bson.gz"]
    assert [f.default_collection for f in files] == [None, "orders"]
    named = discover(tmp_path / "dump", source_id="hist")
    assert named[0].source_id == "hist/a.ndjson"


def test_unknown_or_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ReaderError, match="unknown format"):
        discover(tmp_path / "x.txt")
    with pytest.raises(ReaderError, match="no such file"):
        discover(tmp_path / "nope")
    with pytest.raises(ReaderError, match=r"no \.jsonl"):
        discover(tmp_path)
