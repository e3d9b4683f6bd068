"""A MongoDB server that answers pymongo as MongoDB's documentation says MongoDB does,
scripted per test, on 127.0.0.1 (MockupDB, a wire-protocol test library made for
this): for the reply shapes that only MongoDB gives, which FerretDB never sends.

Measured with pymongo 4.20: MockupDB 1.8.1 speaks OP_MSG and answers every command
pymongo sends here, from its own threads; only its `go()` future cannot re-raise
pymongo's BulkWriteError (it rebuilds exceptions from their text), so it is not used."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mockupdb import MockupDB, Request

#: A MongoDB 7.0 replica set's primary, as far as the driver's handshake is concerned.
HELLO: dict[str, Any] = {
    "isWritablePrimary": True, "ismaster": True, "maxWireVersion": 21, "minWireVersion": 0,
    "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
    "maxWriteBatchSize": 100_000,
}  # fmt: skip

Reply = Mapping[str, Any]
Script = Callable[[Request], Reply | None]  # None: the script answered (or hung up) itself


@dataclass
class ScriptedMongo:
    """Answers each command by the script for its name; records what it was asked."""

    scripts: dict[str, Script] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Request) -> bool:
        name = request.command_name
        with self._lock:
            self.requests.append(dict(request.doc))
        script = self.scripts.get(name)
        if script is not None:
            reply = script(request)
            if reply is not None:
                request.reply(dict(reply))
        elif name == "find":  # a probe's read: nothing stored
            request.reply({"cursor": {"id": 0, "firstBatch": [], "ns": "db.c"}, "ok": 1})
        elif name in ("hello", "ismaster", "isMaster"):
            request.reply(HELLO)
        elif name == "buildInfo":
            request.reply({"version": "7.0.0", "ok": 1})
        else:
            request.reply({"ok": 1})
        return True

    def asked(self, command: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if command in r]


@contextmanager
def scripted_mongo(**scripts: Script) -> Iterator[tuple[str, ScriptedMongo]]:
    """(a URI on 127.0.0.1, the script) while the server runs."""
    script = ScriptedMongo(dict(scripts))
    server = MockupDB(auto_ismaster=HELLO, port=0)  # binds 127.0.0.1 (AF_INET "localhost")
    server.autoresponds(script.answer)
    port = server.run()
    try:
        yield f"mongodb://127.0.0.1:{port}/?directConnection=true", script
    finally:
        server.stop()


def documents(request: Request) -> list[Mapping[str, Any]]:
    """The documents (insert) or update statements of a write command."""
    doc = request.doc
    for key in ("documents", "updates", "deletes"):
        if key in doc:
            return list(doc[key])
    return list(request.docs[1:]) if len(request.docs) > 1 else []
