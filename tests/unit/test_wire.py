"""The message format: what encodes, what decodes, and the reason for what does not."""

from __future__ import annotations

import base64
import datetime
import gzip

import pytest
from bson import Binary, Decimal128, ObjectId

from producer import wire


def attrs(encoding: str) -> dict[str, dict[str, str]]:
    return wire.message_attributes(encoding, 1)


def test_extended_json_types_round_trip() -> None:
    doc = {
        "_id": ObjectId(),
        "at": datetime.datetime(2026, 5, 6, 7, 8, 9, 123000),
        "price": Decimal128("12.50"),
        "raw": Binary(b"\x00\xff"),
        "nested": {"list": [1, 2.5, None, True, "x"]},
        "nan": float("nan"),
    }
    back = wire.decode_line(wire.encode_record("events", doc)).document
    assert back["_id"] == doc["_id"] and back["at"] == doc["at"]
    assert back["price"] == doc["price"] and bytes(back["raw"]) == bytes(doc["raw"])
    assert back["nested"] == doc["nested"] and back["nan"] != back["nan"]


def test_aware_datetimes_are_stored_as_utc() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=2))
    doc = {"_id": 1, "at": datetime.datetime(2026, 1, 1, 12, 0, tzinfo=tz)}
    back = wire.decode_line(wire.encode_record("e", doc)).document
    assert back["at"] == datetime.datetime(2026, 1, 1, 10, 0)


@pytest.mark.parametrize("encoding", wire.ENCODINGS)
def test_every_encoding_decodes_packed_messages(encoding: str) -> None:
    lines = [wire.encode_record("events", {"_id": ObjectId(), "n": n}) for n in range(50)]
    body = wire.compress_body(wire.join_lines(lines), encoding)
    records = wire.decode_message(body, attrs(encoding))
    assert [r.document["n"] for r in records if isinstance(r, wire.Record)] == list(range(50))


def test_messages_without_attributes_are_format_1_identity() -> None:
    line = wire.encode_record("events", {"_id": 1})
    (record,) = wire.decode_message(line, None)
    assert isinstance(record, wire.Record) and record.collection == "events"


def test_one_bad_line_does_not_spoil_the_others() -> None:
    good = wire.encode_record("events", {"_id": 1})
    items = wire.decode_message(f"{good}\n{{oops\n{good}", None)
    assert [type(i).__name__ for i in items] == ["Record", "BadRecord", "Record"]
    bad = items[1]
    assert isinstance(bad, wire.BadRecord) and bad.number == 2 and "not valid JSON" in bad.reason


@pytest.mark.parametrize(
    ("body", "attributes", "reason"),
    [
        ("x", {wire.FORMAT_ATTRIBUTE: {"StringValue": "3"}}, "unknown format version"),
        ("x", {wire.FORMAT_ATTRIBUTE: {"StringValue": "2"}}, "not valid base64"),
        ("x", {wire.ENCODING_ATTRIBUTE: {"StringValue": "brotli"}}, "unknown encoding"),
        ("%%%", attrs(wire.GZIP), "not valid base64"),
        (base64.b64encode(b"not gzip").decode(), attrs(wire.GZIP), "cannot be decompressed"),
        (
            base64.b64encode(gzip.compress(b"abc" * 100, mtime=0)[:-8]).decode(),
            attrs(wire.GZIP),
            "truncated",
        ),
        (base64.b64encode(gzip.compress(b"\xff\xfe", mtime=0)).decode(), attrs(wire.GZIP), "UTF-8"),
        ("", None, "no records"),
        ("  \n \n", None, "no records"),
    ],
)
def test_unreadable_messages_say_why(body: str, attributes: object, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode_message(body, attributes)  # type: ignore[arg-type]


def test_compression_bombs_are_refused() -> None:
    bomb = wire.compress_body("a" * (2 * 1024 * 1024), wire.ZSTD)
    with pytest.raises(wire.WireError, match="compression bomb"):
        wire.decode_message(bomb, attrs(wire.ZSTD), max_decoded_bytes=1024 * 1024)
    bomb = wire.compress_body("a" * (2 * 1024 * 1024), wire.GZIP)
    with pytest.raises(wire.WireError, match="compression bomb"):
        wire.decode_message(bomb, attrs(wire.GZIP), max_decoded_bytes=1024 * 1024)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"c":"e"}', "'c' .collection. and 'd'"),
        ('["c","d"]', "must be a JSON object"),
        ('{"c":5,"d":{"_id":1}}', "collection must be a string"),
        ('{"c":"","d":{"_id":1}}', "empty"),
        ('{"c":"system.users","d":{"_id":1}}', "reserved"),
        ('{"c":"a$b","d":{"_id":1}}', "'\\$' or NUL"),
        ('{"c":"' + "x" * 121 + '","d":{"_id":1}}', "longer than 120"),
        ('{"c":"e","d":[1]}', "document must be a JSON object"),
        ('{"c":"e","d":{"n":1}}', "no _id"),
        ('{"c":"e","d":{"_id":[1]}}', "must not be an array"),
        ('{"c":"e","d":{"_id":1,"$set":{}}}', "starts with '\\$'"),
        ('{"c":"e","d":{"_id":1,"a":{"b\\u0000":1}}}', "NUL"),
        ('{"c":"e","d":{"_id":{"$oid":"nothex"}}}', "invalid ObjectId value"),
        ('{"c":"e","d":{"_id":{"$oid":null}}}', "invalid ObjectId value null"),
        ('{"c":"e","d":{"_id":{"$oid":5}}}', "invalid ObjectId value 5: expected 24 hex"),
        ('{"c":"e","d":{"_id":{"$oid":"zz"}}}', "invalid ObjectId"),
        ('{"c":"e","d":{"_id":1,"b":{"$binary":null,"$type":false}}}', "invalid binary value null"),
        (
            '{"c":"e","d":{"_id":1,"p":{"$numberDecimal":"nope"}}}',
            'invalid Decimal128 value "nope"',
        ),
        ('{"c":"e","d":{"_id":1,"n":{"$numberLong":"' + "9" * 25 + '"}}}', "out of range"),
        (
            '{"c":"e","d":{"_id":1,"n":{"$numberInt":"3000000000"}}}',
            "32-bit integer .* out of range",
        ),
        ('{"c":"e","d":{"_id":1,"t":{"$date":"yesterday"}}}', 'invalid date value "yesterday"'),
        ('{"c":"e","d":{"_id":1,"u":{"$uuid":"x"}}}', 'invalid UUID value "x"'),
        ('{"c":"e",', "not valid JSON"),
        ('{"c":"e","d":{"_id":1,"x":' + "[" * 150 + "]" * 150 + "}}", "nested deeper"),
        ('{"c":"e","d":{"_id":1,"x":' + "[" * 100000 + "]" * 100000 + "}}", "nested too deeply"),
    ],
)
def test_bad_records_say_why(line: str, reason: str) -> None:
    with pytest.raises(wire.WireError, match=reason):
        wire.decode_line(line)


def test_unencodable_documents_fail_at_encode() -> None:
    with pytest.raises(wire.WireError, match="cannot be encoded"):
        wire.encode_record("events", {"_id": 1, "x": object()})


def test_the_documented_format_2_example_decodes_as_documented() -> None:
    """docs/wire-format.md shows one record byte by byte for other languages' writers."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "wire-format.md").read_text()
    (example,) = re.findall(r"sent base64-encoded as `([A-Za-z0-9+/=]+)`", text)
    attributes = wire.message_attributes(wire.IDENTITY, 1, wire.BSON_RECORDS)
    (record,) = wire.decode_message(example, attributes)
    assert isinstance(record, wire.Record)
    assert (record.collection, dict(record.document)) == ("c", {"_id": 1})
    section = text.split("## Format 2", 1)[1].split("\n## ", 1)[0]  # not the operations' example
    rows = re.findall(r"^([0-9a-f]{2}(?: {1,2}[0-9a-f]{2})*) {4,}\S", section, re.M)
    assert bytes.fromhex(" ".join(rows)) == base64.b64decode(example)
