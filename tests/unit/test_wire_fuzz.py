"""Property-based tests of the wire format: any BSON-compatible document survives
encode -> decode unchanged, and the decoder answers any input with records, bad
records or a WireError, never another exception."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import datetime
from typing import Any

import zstandard
from bson import Binary, Decimal128, ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import wire
from producer.wire import jsonlines
from tests.support.harness import scale

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
KEYS = st.text(max_size=12).filter(
    lambda k: not k.startswith("$") and "\x00" not in k and "." not in k
)
DATES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)  # BSON keeps milliseconds
)
DECIMALS = (
    st.decimals(allow_nan=False, allow_infinity=False)
    .filter(lambda d: len(d.as_tuple().digits) <= 34 and abs(d.adjusted()) < 6000)
    .map(Decimal128)  # what Decimal128 holds exactly: 34 digits
)
SCALARS = (
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text()
    | DATES | st.binary(min_size=12, max_size=12).map(ObjectId) | DECIMALS
    | st.binary(max_size=32)  # Binary subtype 0 comes back as bytes
    | st.binary(max_size=16).map(lambda b: Binary(b, 5))
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)
IDS = st.binary(min_size=12, max_size=12).map(ObjectId) | INT64 | st.text(max_size=30)
DOCUMENTS = st.builds(
    lambda fields, oid: {**fields, "_id": oid}, st.dictionaries(KEYS, VALUES, max_size=8), IDS
)
COLLECTIONS = st.text(min_size=1, max_size=40).filter(
    lambda c: (
        "$" not in c
        and "\x00" not in c
        and not c.startswith((".", "system."))
        and not c.endswith(".")
        and ".." not in c
        and not any("\ud800" <= ch <= "\udfff" for ch in c)
    )
)
FUZZ = settings(
    max_examples=scale(120, 2000), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(COLLECTIONS, DOCUMENTS)
def test_any_document_round_trips(collection: str, document: dict[str, Any]) -> None:
    line = wire.encode_record(collection, document)
    assert "\n" not in line
    record = wire.decode_line(line)
    assert record.collection == collection
    assert record.document == document


@FUZZ
@given(st.lists(st.tuples(COLLECTIONS, DOCUMENTS), min_size=1, max_size=5),
       st.sampled_from(wire.ENCODINGS))  # fmt: skip
def test_any_packed_message_round_trips(
    records: list[tuple[str, dict[str, Any]]], encoding: str
) -> None:
    text = wire.join_lines(wire.encode_record(c, d) for c, d in records)
    body = wire.compress_body(text, encoding)
    decoded = wire.decode_message(body, wire.message_attributes(encoding, len(records)))
    assert [(r.collection, r.document) for r in decoded] == records  # type: ignore[union-attr]


# ------------------------------------------------------------------ hostile input

EXTENDED_KEYS = st.sampled_from([
    "$oid", "$date", "$numberLong", "$numberInt", "$numberDouble", "$numberDecimal", "$binary",
    "$base64", "$subType", "$type", "$regex", "$options", "$regularExpression", "$code", "$scope",
    "$timestamp", "$uuid", "$minKey", "$maxKey", "$symbol", "$dbPointer", "$ref", "$id", "$db",
    "$undefined", "base64", "subType", "t", "i", "pattern", "options", "_id", "c", "d",
])  # fmt: skip
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.sampled_from(["0123456789abcdef01234567", "1970-01-01T00:00:00Z", "00", "AA==", "x"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(EXTENDED_KEYS | st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
ATTRIBUTE_VALUES = st.none() | st.text(max_size=10) | st.sampled_from(["1", "2", *wire.ENCODINGS])


def _attributes(version: str | None, encoding: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if version is not None:
        found[wire.FORMAT_ATTRIBUTE] = {"DataType": "String", "StringValue": version}
    if encoding is not None:
        found[wire.ENCODING_ATTRIBUTE] = {"DataType": "String", "StringValue": encoding}
    return found


def _decodes_or_wire_error(body: str, attributes: dict[str, Any]) -> None:
    try:
        items = wire.decode_message(body, attributes, max_decoded_bytes=1 << 20)
    except wire.WireError as exc:
        assert str(exc)  # every refusal carries a reason
        return
    assert items
    for item in items:
        assert isinstance(item, wire.Record | wire.BadRecord)


@FUZZ
@given(st.text(max_size=300), ATTRIBUTE_VALUES, ATTRIBUTE_VALUES)
def test_any_text_only_raises_wire_error(body: str, version: str | None, enc: str | None) -> None:
    _decodes_or_wire_error(body, _attributes(version, enc))


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([wire.GZIP, wire.ZSTD]), st.booleans())
def test_any_bytes_only_raise_wire_error(raw: bytes, encoding: str, compress: bool) -> None:
    if compress:  # a valid frame around arbitrary bytes: exercises UTF-8 and JSON errors
        raw = gzip.compress(raw) if encoding == wire.GZIP else zstandard.compress(raw)
    _decodes_or_wire_error(base64.b64encode(raw).decode(), _attributes("1", encoding))


@FUZZ
@given(JSONISH, JSONISH)
def test_any_extended_json_record_only_raises_wire_error(collection: Any, document: Any) -> None:
    line = json.dumps({"c": collection, "d": document})
    _decodes_or_wire_error(line, {})
    _decodes_or_wire_error(json.dumps(document), {})


@FUZZ
@given(st.dictionaries(EXTENDED_KEYS, JSONISH, max_size=4))
def test_any_extended_json_wrapper_as_a_value_only_raises_wire_error(wrapper: Any) -> None:
    line = json.dumps({"c": "things", "d": {"_id": 1, "v": wrapper}})
    _decodes_or_wire_error(line, {})
    _decodes_or_wire_error(json.dumps({"c": "things", "d": {"_id": wrapper}}), {})


AWARE_DATES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
)


@settings(max_examples=scale(300, 2000), deadline=None)
@given(value=st.datetimes(min_value=datetime(1, 1, 1)) | AWARE_DATES
       | st.binary(min_size=12, max_size=12).map(ObjectId))  # fmt: skip
def test_fast_encoding_of_ids_and_dates_matches_json_util(value: Any) -> None:
    """The producer encodes ObjectIds and dates inline; the text must be json_util's."""
    assert jsonlines._default(value) == jsonlines._json_util_default(value)


def _decoded_twice(line: str) -> tuple[str, str]:
    """Decodes `line` twice; each result as canonical Extended JSON (or its refusal)."""
    results = []
    for _ in range(2):
        try:
            record = wire.decode_line(line)
        except wire.WireError as exc:
            results.append(f"refused: {exc}")
        else:
            results.append(json_util.dumps(record.document, json_options=CANONICAL_JSON_OPTIONS))
    return results[0], results[1]


@FUZZ
@given(st.dictionaries(EXTENDED_KEYS, JSONISH, max_size=4), JSONISH)
def test_decoding_is_deterministic(wrapper: Any, value: Any) -> None:
    """The same line always decodes to the same document: a redelivery must collapse
    onto the first write ({"$oid": null} once decoded to a fresh random ObjectId)."""
    for document in ({"_id": wrapper, "v": value}, {"_id": value, "w": wrapper}):
        first, second = _decoded_twice(json.dumps({"c": "things", "d": document}))
        assert first == second


def test_an_oid_wrapper_without_a_valid_id_is_refused() -> None:
    for value in (None, 5, "zz", "0" * 23, "g" * 24, ["0" * 24], {"$oid": "0" * 24}):
        line = json.dumps({"c": "things", "d": {"_id": {"$oid": value}}})
        first, second = _decoded_twice(line)
        assert first == second and first.startswith("refused: invalid ObjectId value")
