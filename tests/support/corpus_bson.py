"""The bad-input corpus for format 2 (BSON records): bodies built byte by byte, each with
the outcome it must get. Good records ride beside the bad one in the same message:
they must be written whatever happens to it."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field

import bson
import zstandard

from producer import wire
from tests.support.corpus import Expect, MiB

GOOD_COLLECTION = "corpus2_good"
ODD_COLLECTION = "corpus2_odd"


@dataclass(frozen=True)
class BsonCase:
    name: str
    body: str
    expect: Expect
    reason: str = ""  # a substring the dead-letter reason must hold
    good_ids: tuple[str, ...] = ()  # good records in the same message: always written
    ids: tuple[object, ...] = ()  # for WRITTEN / STORE: the odd records' _ids
    whole: bool = False  # the message is dead-lettered whole (its framing broke)
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    on_ferretdb: str = ""  # for STORE: its letter's reason where FerretDB refuses it
    on_mongodb: str = ""  # the same on MongoDB; empty: that server stores it, once


def attrs(encoding: str = wire.IDENTITY) -> dict[str, dict[str, str]]:
    return wire.message_attributes(encoding, 1, wire.BSON_RECORDS)


def table(*names: object) -> bytes:
    return bson.encode({str(n): name for n, name in enumerate(names)})


def frame(slot: int, document: bytes, flags: int = 0, trace: bytes = b"") -> bytes:
    head = bytes((flags,)) + slot.to_bytes(2, "little")
    if flags & 1:
        head += bytes((len(trace),)) + trace
    return head + document


def good(tag: str) -> bytes:
    return frame(0, bson.encode({"_id": tag, "ok": True}))


def body(names: bytes, *records: bytes, encoding: str = wire.IDENTITY) -> str:
    return wire.bson_body(names + b"".join(records), encoding)


def _doc(**fields: object) -> bytes:
    return bson.encode(fields)


def _raw(*elements: bytes) -> bytes:
    """A BSON document from raw elements (what no encoder would write)."""
    content = b"".join(elements) + b"\x00"
    return struct.pack("<i", len(content) + 4) + content


def _deep(levels: int) -> bytes:
    document: dict[str, object] = {"leaf": 1}
    for _ in range(levels):
        document = {"n": document}
    return bson.encode({"_id": "deep", **document})


def _between(name: str, bad: bytes, expect: Expect, reason: str = "", **extra: object) -> BsonCase:
    """One bad (or odd) record between two good ones, collection 1 being the odd one."""
    tag = name.replace(" ", "-")
    names = table(GOOD_COLLECTION, ODD_COLLECTION)
    message = body(names, good(f"{tag}-before"), bad, good(f"{tag}-after"))
    return BsonCase(name, message, expect, reason, (f"{tag}-before", f"{tag}-after"),
                    attributes=attrs(), **extra)  # type: ignore[arg-type]  # fmt: skip


def _record_cases() -> list[BsonCase]:
    return [
        _between("document without _id", frame(1, _doc(v=1)), Expect.DEAD, "no _id"),
        _between("array _id", frame(1, _doc(_id=[1, 2])), Expect.DEAD, "array"),
        _between("top-level $set", frame(1, _doc(_id=1, **{"$set": {"a": 1}})), Expect.DEAD,
                 "starts with '$'"),
        _between("_id not first, no $", frame(1, _doc(v=1, _id="late")), Expect.WRITTEN,
                 ids=("late",)),
        _between("collection index out of range", frame(7, _doc(_id=1)), Expect.DEAD,
                 "collection index 7"),
        _between("nesting beyond 100 levels", frame(1, _deep(wire.MAX_NESTING_DEPTH + 5)),
                 Expect.DEAD, "nested deeper"),
        _between("terminator missing", frame(1, _doc(_id=1)[:-1] + b"\x01"), Expect.DEAD,
                 "does not end where its length prefix says"),
        _between("invalid UTF-8 in a string", frame(1, _raw(b"\x02_id\x00" + struct.pack("<i", 3)
                 + b"\xff\xfe\x00")), Expect.STORE),  # stored: FerretDB as U+FFFD
        _between("traced record", frame(1, _doc(_id="traced"), 1, b"00-" + b"a" * 32 + b"-" + b"b" * 16
                 + b"-01"), Expect.WRITTEN, ids=("traced",)),
        _between("nested $-key", frame(1, _doc(_id="nd", a={"$foo": 1})), Expect.STORE, ids=("nd",),
                 on_ferretdb="invalid key: \"$foo\" (key must not start with '$'"),
        _between("Decimal128", frame(1, _doc(_id="dec", v=bson.Decimal128("1.5"))), Expect.STORE,
                 ids=("dec",), on_ferretdb="the database closed the connection each time"),
    ]  # fmt: skip


def _framing_cases() -> list[BsonCase]:
    names = table(GOOD_COLLECTION, ODD_COLLECTION)
    doc = _doc(_id="x", pad="p" * 40)
    lying = struct.pack("<i", 12) + doc[4:]  # says 12 bytes, holds more
    return [
        BsonCase("truncated record", body(names, good("trunc-before"), frame(1, doc)[:-9]),
                 Expect.DEAD, "length prefix says", ("trunc-before",), whole=True,
                 attributes=attrs()),
        BsonCase("a length prefix that lies", body(names, good("lie-before"), frame(1, lying),
                 good("lie-after")), Expect.DEAD, "its length prefix says", ("lie-before",), whole=True,
                 attributes=attrs()),
        BsonCase("unknown flags", body(names, good("flags-before"), frame(1, doc, flags=0x80)),
                 Expect.DEAD, "unknown flags", ("flags-before",), whole=True, attributes=attrs()),
    ]  # fmt: skip


def _message_cases() -> list[BsonCase]:
    one = frame(0, _doc(_id=1))
    bomb = zstandard.ZstdCompressor().compress(table("c") + frame(0, _doc(_id=1, p=" " * 40 * MiB)))
    return [
        BsonCase("not base64", "!!!not*base64", Expect.DEAD, "not valid base64", attributes=attrs()),
        BsonCase("zstd frame declaring a huge size", base64.b64encode(bomb).decode(), Expect.DEAD,
                 "compression bomb", attributes=attrs(wire.ZSTD)),
        BsonCase("collection table not BSON", body(b"\x07\x00\x00\x00junk", one), Expect.DEAD,
                 "collection table", attributes=attrs()),
        BsonCase("collection table of numbers", body(table(5), one), Expect.DEAD,
                 "string names", attributes=attrs()),
        BsonCase("collection table only", body(table("c")), Expect.DEAD, "no records",
                 attributes=attrs()),
        BsonCase("system collection", body(table("system.users"), one), Expect.DEAD, "reserved",
                 attributes=attrs()),
        BsonCase("gzip body of format 2", body(table(GOOD_COLLECTION), good("gz"),
                 encoding=wire.GZIP), Expect.WRITTEN, good_ids=("gz",),
                 attributes=attrs(wire.GZIP)),
        BsonCase("format 2 labelled format 1", body(table("c"), one), Expect.DEAD,
                 "not valid JSON", attributes={}),
    ]  # fmt: skip


BSON_CASES: list[BsonCase] = _record_cases() + _framing_cases() + _message_cases()
