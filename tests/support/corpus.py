"""A corpus of bad (and surprising but valid) messages and records, each with the
outcome it must get. Used by the unit tests (through the decoder) and the
integration tests (through ElasticMQ, the consumer process and FerretDB)."""

from __future__ import annotations

import base64
import enum
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zstandard

from producer import wire

if TYPE_CHECKING:
    from tests.support.corpus_bson import BsonCase

MiB = 1024 * 1024
GOOD_COLLECTION = "corpus_good"
ODD_COLLECTION = "corpus_odd"  # where the surprising-but-valid records go


class Expect(enum.Enum):
    DEAD = "dead"  # the decoder refuses it: dead-lettered with a reason naming the problem
    WRITTEN = "written"  # valid after all: written (once)
    STORE = "store"  # decodes; the sink or the server decides, one outcome per server:
    # stored once, or dead-lettered with the reason in `on_ferretdb` / `on_mongodb`


@dataclass(frozen=True)
class Case:
    name: str
    body: str
    expect: Expect
    reason: str = ""  # a substring the dead-letter reason must hold
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    line: bool = False  # one record line: it can also be packed beside good lines
    sendable: bool = True  # SQS accepts it (non-empty, attribute values non-empty)
    ids: tuple[object, ...] = ()  # for WRITTEN: the _ids that must end up stored once
    # For STORE: what its dead letter's reason holds on FerretDB 1.24 / on MongoDB, where
    # it is refused (README, "Local servers"; docs/operations.md, "Dead letters"); empty:
    # that server stores it, once.
    on_ferretdb: str = ""
    on_mongodb: str = ""


def is_ferretdb(db: object) -> bool:
    """Is the database behind this pymongo Database FerretDB (not MongoDB)?"""
    return "ferretdbVersion" in db.client.admin.command("buildInfo")  # type: ignore[attr-defined]


def letter_reason(case: Case | BsonCase, ferretdb: bool) -> str:
    """What the case's one dead letter must say on this server; empty: no letter."""
    if case.expect is Expect.DEAD:
        return case.reason
    if case.expect is Expect.STORE:
        return case.on_ferretdb if ferretdb else case.on_mongodb
    return ""


def attrs(encoding: str | None = None, version: str | None = None) -> dict[str, dict[str, str]]:
    found = {}
    if version is not None:
        found[wire.FORMAT_ATTRIBUTE] = {"DataType": "String", "StringValue": version}
    if encoding is not None:
        found[wire.ENCODING_ATTRIBUTE] = {"DataType": "String", "StringValue": encoding}
    return found


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def gz(raw: bytes) -> str:
    return b64(gzip.compress(raw, mtime=0))


def zs(raw: bytes) -> str:
    return b64(zstandard.ZstdCompressor().compress(raw))


def zs_streamed(raw: bytes) -> str:
    """A zstd frame without a declared content size, as a streaming writer makes."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as writer:
        writer.write(raw)
    return b64(out.getvalue())


def rec(collection: object, document: object) -> str:
    return json.dumps({"c": collection, "d": document}, separators=(",", ":"))


def bad(name: str, document: object, reason: str, collection: object = "things") -> Case:
    return Case(name, rec(collection, document), Expect.DEAD, reason, line=True)


def _big_document_line(payload_bytes: int, name: str) -> bytes:
    return rec(ODD_COLLECTION, {"_id": name, "blob": "a" * payload_bytes}).encode()


def _message_cases() -> list[Case]:
    """Whole messages that cannot be read at all."""
    good = rec(GOOD_COLLECTION, {"_id": "never-stored"}).encode()
    return [
        Case("empty body", "", Expect.DEAD, "no records", sendable=False),
        Case("whitespace-only body", "  \n \t\n  ", Expect.DEAD, "no records"),
        Case("newlines only", "\n\n\n", Expect.DEAD, "no records"),
        Case("format version 3", good.decode(), Expect.DEAD, "unknown format version",
             attrs(version="3")),
        Case("format version 1.0", good.decode(), Expect.DEAD, "unknown format version",
             attrs(version="1.0")),
        Case("empty format version", good.decode(), Expect.DEAD, "unknown format version",
             attrs(version=""), sendable=False),
        Case("unknown encoding brotli", gz(good), Expect.DEAD, "unknown encoding",
             attrs("brotli")),
        Case("encoding in capitals", gz(good), Expect.DEAD, "unknown encoding", attrs("GZIP")),
        Case("invalid base64", "!!!not*base64", Expect.DEAD, "not valid base64", attrs("gzip")),
        Case("base64 with bad padding", "abc", Expect.DEAD, "not valid base64", attrs("zstd")),
        Case("non-ASCII in base64", "é" + gz(good), Expect.DEAD, "not valid base64",
             attrs("gzip")),
        Case("gzip flag on plain text", good.decode(), Expect.DEAD, "not valid base64", attrs("gzip")),
        Case("gzip of random bytes", b64(b"\x00\x01garbage" * 10), Expect.DEAD,
             "cannot be decompressed", attrs("gzip")),
        Case("zstd of random bytes", b64(b"\x00\x01garbage" * 10), Expect.DEAD,
             "cannot be decompressed", attrs("zstd")),
        Case("zstd body labelled gzip", zs(good), Expect.DEAD, "cannot be decompressed",
             attrs("gzip")),
        Case("truncated gzip", b64(base64.b64decode(gz(good * 50))[:-20]), Expect.DEAD,
             "truncated", attrs("gzip")),
        Case("truncated zstd", b64(base64.b64decode(zs(good * 50))[:-12]), Expect.DEAD,
             "cannot be decompressed", attrs("zstd")),
        Case("truncated streamed zstd", b64(base64.b64decode(zs_streamed(good * 50))[:-6]),
             Expect.DEAD, "is truncated", attrs("zstd")),
        Case("gzip bomb past 32 MiB", gz(b"\n" * (40 * MiB)), Expect.DEAD, "compression bomb",
             attrs("gzip")),
        Case("zstd bomb (declared size)", zs(b" " * (40 * MiB)), Expect.DEAD, "compression bomb",
             attrs("zstd")),
        Case("zstd bomb (streamed, no size)", zs_streamed(b" " * (40 * MiB)), Expect.DEAD,
             "compression bomb", attrs("zstd")),
        Case("invalid UTF-8 in gzip", gz(b'{"c":"x","d":{"_id":"\xff\xfe"}}'), Expect.DEAD,
             "not valid UTF-8", attrs("gzip")),
        Case("invalid UTF-8 in zstd", zs(b"\xc3\x28" * 10), Expect.DEAD, "not valid UTF-8",
             attrs("zstd")),
        Case("document over 16 MiB after inflating", gz(_big_document_line(17 * MiB, "big")),
             Expect.DEAD, "16 MiB", attrs("gzip")),
    ]  # fmt: skip


def _line_cases() -> list[Case]:
    """Single record lines that must be refused (alone, or beside good lines)."""
    deep = {"_id": "deep"}
    cursor = deep
    for _ in range(wire.MAX_NESTING_DEPTH + 5):
        cursor["n"] = {}
        cursor = cursor["n"]
    very_deep = '{"c":"things","d":{"_id":"vd","v":' + "[" * 50_000 + "]" * 50_000 + "}}"
    return [
        Case("not JSON", "this is not json", Expect.DEAD, "not valid JSON", line=True),
        Case("truncated JSON", '{"c":"things","d":{"_id":1', Expect.DEAD,
             "not valid JSON", line=True),
        Case("trailing garbage", '{"c":"things","d":{"_id":1}}}', Expect.DEAD,
             "not valid JSON", line=True),
        Case("byte order mark", "\ufeff" + rec("things", {"_id": 1}), Expect.DEAD,
             "not valid JSON", line=True),
        Case("line is a JSON array", "[1, 2, 3]", Expect.DEAD, "must be a JSON object", line=True),
        Case("line is a JSON string", '"a string"', Expect.DEAD, "must be a JSON object",
             line=True),
        Case("line is a number", "42", Expect.DEAD, "must be a JSON object", line=True),
        Case("line is null", "null", Expect.DEAD, "must be a JSON object", line=True),
        Case("missing collection", json.dumps({"d": {"_id": 1}}), Expect.DEAD, "'c'", line=True),
        Case("missing document", json.dumps({"c": "things"}), Expect.DEAD, "'d'", line=True),
        bad("collection is a number", {"_id": 1}, "must be a string", collection=7),
        bad("collection is null", {"_id": 1}, "must be a string", collection=None),
        bad("collection is a list", {"_id": 1}, "must be a string", collection=["a"]),
        bad("empty collection", {"_id": 1}, "empty", collection=""),
        bad("collection too long", {"_id": 1}, "longer than", collection="c" * 121),
        bad("system collection", {"_id": 1}, "reserved", collection="system.users"),
        bad("system.profile", {"_id": 1}, "reserved", collection="system.profile"),
        bad("$ in collection", {"_id": 1}, "'$'", collection="a$b"),
        bad("$cmd collection", {"_id": 1}, "'$'", collection="$cmd"),
        bad("NUL in collection", {"_id": 1}, "NUL", collection="a\x00b"),
        bad("collection starts with a dot", {"_id": 1}, "'.'", collection=".hidden"),
        bad("document is a list", [{"_id": 1}], "must be a JSON object"),
        bad("document is a string", "doc", "must be a JSON object"),
        bad("document without _id", {"v": 1}, "no _id"),
        bad("array _id", {"_id": [1, 2]}, "array"),
        bad("top-level $set key", {"_id": 1, "$set": {"a": 1}}, "starts with '$'"),
        bad("top-level $where key", {"_id": 1, "$where": "sleep(1)"}, "starts with '$'"),
        bad("NUL in a nested key", {"_id": 1, "a": {"b\x00c": 1}}, "NUL"),
        bad("NUL in a top-level key", {"_id": 1, "b\x00": 1}, "NUL"),
        bad("nesting beyond 100 levels", deep, "nested deeper"),
        Case("JSON deep enough to hit recursion limits", very_deep, Expect.DEAD,
             "nested too deeply", line=True),
        bad("bad ObjectId", {"_id": {"$oid": "not-an-object-id"}}, "invalid ObjectId value"),
        bad("short ObjectId", {"_id": {"$oid": "abc123"}}, "invalid ObjectId value"),
        bad("bad $date", {"_id": 1, "t": {"$date": "yesterday"}}, 'invalid date value "yesterday"'),
        bad("$date out of range", {"_id": 1, "t": {"$date": {"$numberLong": "9" * 25}}},
            "out of range"),
        bad("$date past year 9999", {"_id": 1, "t": {"$date": {"$numberLong": "9" * 17}}},
            "invalid date value"),
        bad("null ObjectId", {"_id": {"$oid": None}}, "invalid ObjectId value null"),
        bad("numeric ObjectId", {"_id": {"$oid": 5}}, "invalid ObjectId value 5"),
        bad("ObjectId of bad hex", {"_id": {"$oid": "zz"}}, "invalid ObjectId value"),
        bad("$numberLong beyond 64 bits", {"_id": 1, "n": {"$numberLong": "9" * 20}},
            "out of range"),
        bad("binary without base64", {"_id": 1, "b": {"$binary": {}}}, "invalid binary value"),
        bad("bad $numberLong", {"_id": 1, "n": {"$numberLong": "twelve"}},
            'invalid 64-bit integer value "twelve"'),
        bad("bad $numberDecimal", {"_id": 1, "n": {"$numberDecimal": "x.y"}},
            'invalid Decimal128 value "x.y"'),
        bad("bad $uuid", {"_id": 1, "u": {"$uuid": "not-a-uuid"}}, "invalid UUID value"),
    ]  # fmt: skip


#: FerretDB 1.24's answer to a value it cannot store: the connection dropped (README).
_CLOSED = "the database closed the connection each time this record was written"


def _valid_cases() -> list[Case]:
    """Odd but valid: written (duplicates collapse), or left to the store."""
    dup = rec(ODD_COLLECTION, {"_id": "dup", "v": 1})
    return [
        Case("duplicate _id inside one message", dup + "\n" + dup, Expect.WRITTEN, ids=("dup",)),
        Case("CRLF line endings", rec(ODD_COLLECTION, {"_id": "crlf"}) + "\r\n"
             + rec(ODD_COLLECTION, {"_id": "crlf2"}) + "\r\n", Expect.WRITTEN,
             ids=("crlf", "crlf2")),
        Case("blank lines between records", "\n\n" + rec(ODD_COLLECTION, {"_id": "blank"}) + "\n\n",
             Expect.WRITTEN, ids=("blank",)),
        Case("null _id", rec(ODD_COLLECTION, {"_id": None}), Expect.WRITTEN, line=True,
             ids=(None,)),
        Case("object _id", rec(ODD_COLLECTION, {"_id": {"k": "obj"}}), Expect.WRITTEN, line=True,
             ids=({"k": "obj"},)),
        Case("unicode collection and keys", rec("événements", {"_id": "uni", "clé": "☃"}),
             Expect.WRITTEN, line=True, ids=("uni",)),
        Case("format 1 given explicitly", rec(ODD_COLLECTION, {"_id": "v1"}), Expect.WRITTEN,
             attributes=attrs("identity", "1"), ids=("v1",)),
        Case("64-bit integer edge", rec(ODD_COLLECTION, {"_id": "i64", "v": 2**63 - 1}),
             Expect.WRITTEN, line=True, ids=("i64",)),
        # The driver cannot encode these: refused by the sink, whatever the server.
        Case("integer beyond 64 bits", rec(ODD_COLLECTION, {"_id": "i65", "v": 2**64}),
             Expect.STORE, line=True, ids=("i65",), on_ferretdb="does not fit in 64 bits",
             on_mongodb="does not fit in 64 bits"),
        Case("lone surrogate in a string", '{"c":"corpus_odd","d":{"_id":"sur","v":"\\ud800"}}',
             Expect.STORE, line=True, ids=("sur",), on_ferretdb="lone surrogate (\\ud800)",
             on_mongodb="lone surrogate (\\ud800)"),
        # MongoDB (5.0 on) stores these; FerretDB 1.24 refuses each with its reason.
        Case("nested $-key", rec(ODD_COLLECTION, {"_id": "nd", "a": {"$foo": 1}}), Expect.STORE,
             line=True, ids=("nd",), on_ferretdb="invalid key: \"$foo\" (key must not start with '$'"),
        Case("dotted key", rec(ODD_COLLECTION, {"_id": "dot", "a.b": 1}), Expect.STORE,
             line=True, ids=("dot",), on_ferretdb="invalid key: \"a.b\" (key must not contain '.'"),
        Case("regex _id", rec(ODD_COLLECTION, {"_id": {"$regex": "a", "$options": ""}}),
             Expect.STORE, line=True, on_ferretdb="(error 53): The '_id' value cannot be of type regex",
             on_mongodb="The '_id' value cannot be of type regex"),  # both refuse it
        # FerretDB fails the whole bulk on these (an error for the command, or a dropped
        # connection) while it answers otherwise: only the record itself may be refused.
        Case("NUL inside a string value", rec(ODD_COLLECTION, {"_id": "nul", "s": "a\x00b"}),
             Expect.STORE, line=True, ids=("nul",), on_ferretdb="(SQLSTATE 22P05)"),
        Case("NaN", '{"c":"corpus_odd","d":{"_id":"nan","v":{"$numberDouble":"NaN"}}}',
             Expect.STORE, line=True, ids=("nan",), on_ferretdb=_CLOSED),
        Case("MinKey", rec(ODD_COLLECTION, {"_id": "min", "v": {"$minKey": 1}}), Expect.STORE,
             line=True, ids=("min",), on_ferretdb=_CLOSED),
        Case("Decimal128", rec(ODD_COLLECTION, {"_id": "dec", "v": {"$numberDecimal": "1.5"}}),
             Expect.STORE, line=True, ids=("dec",), on_ferretdb=_CLOSED),
        Case("infinity", '{"c":"corpus_odd","d":{"_id":"inf","v":1e400}}', Expect.STORE,
             line=True, ids=("inf",), on_ferretdb="(infinity values are not allowed)"),
        Case("nested arrays", rec(ODD_COLLECTION, {"_id": "arr", "v": [[[]]]}), Expect.STORE,
             line=True, ids=("arr",), on_ferretdb="(nested arrays are not supported)"),
        Case("gzip body, valid", gz(rec(ODD_COLLECTION, {"_id": "gz"}).encode()), Expect.WRITTEN,
             attributes=attrs("gzip"), ids=("gz",)),
        Case("zstd streamed body, valid", zs_streamed(rec(ODD_COLLECTION, {"_id": "zs"}).encode()),
             Expect.WRITTEN, attributes=attrs("zstd"), ids=("zs",)),
    ]  # fmt: skip


CASES: list[Case] = _message_cases() + _line_cases() + _valid_cases()
BAD_KINDS = sum(1 for case in CASES if case.expect is Expect.DEAD)


# Reasons are for whoever sent the record: no reprs, tracebacks or driver hints.
PYTHON_TEXT = re.compile(
    r"<class '|object at 0x|Traceback|\[<|CodecOptions|https?://|\w+Error\(|\w+Exception\("
)
