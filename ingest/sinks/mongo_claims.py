"""Claims: one writer at a time per document, where the server loses concurrent updates.

FerretDB 1.24 applies an update by reading the document, changing it in Go and writing
it back, with nothing in between to stop another writer: measured here, 8 threads
each sending 200 `$inc` to one document left 383 of 1,600. No filter can make such an
update exactly-once (both writers read the same state, both pass). MongoDB applies an
update atomically per document, and needs none of this.

So the sink asks the server once (concurrent `$inc`s on a document of its own: does
the sum come out right?) and, where it does not, each round of operations first claims
its _ids: an insert into `_ingest_claims.<collection>`, whose unique _id index is
atomic on both servers. An _id another writer holds is waited for (a few seconds),
then left to retry; a claim older than the lease (a writer that died holding it) is
taken over. Claims are released after the round."""

from __future__ import annotations

import datetime
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from ingest.sinks.base import INTERNAL_PREFIX
from ingest.sinks.modes import Document

CLAIMS_PREFIX: Final = INTERNAL_PREFIX + "claims."
#: A claim older than this was left by a writer that died (a write gives up after 30 s).
LEASE_SECONDS: Final = 60.0
#: How long a round waits for _ids another writer holds before leaving them to retry.
WAIT_SECONDS: Final = 5.0
PROBE_THREADS, PROBE_INCREMENTS = 8, 50


class Claims:
    def __init__(self) -> None:
        self._token = uuid.uuid4().hex  # this process's claims
        self._lock = threading.Lock()
        self.needed: bool | None = None  # None: not asked of the server yet

    def required(self, probe: Collection[Document]) -> bool:
        with self._lock:
            if self.needed is None:
                self.needed = loses_concurrent_updates(probe)
            return self.needed

    def each_held(
        self,
        collection: Collection[Document],
        ids: Sequence[Any],
        write: Callable[[list[int]], None],
    ) -> set[int]:
        """`write(indexes)` for the _ids (unique) it could claim, released after each
        write, again for the others until WAIT_SECONDS pass; returns those never held.
        Nothing is held while waiting, so two writers never wait for each other."""
        left = set(range(len(ids)))
        deadline = time.monotonic() + WAIT_SECONDS
        while left:
            with self._held(collection, ids, sorted(left)) as held:
                if held:
                    write(held)
            left -= set(held)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(random.uniform(0.002, 0.02))
        return left

    @contextmanager
    def _held(
        self, collection: Collection[Document], ids: Sequence[Any], wanted: list[int]
    ) -> Iterator[list[int]]:
        claims = collection.database.get_collection(CLAIMS_PREFIX + collection.name)
        held: list[int] = []
        try:
            held = self._claim(claims, ids, wanted)
            if len(held) < len(wanted):
                self._take_over_expired(claims, [ids[i] for i in wanted if i not in held])
            yield held
        finally:
            if held:
                claims.delete_many({"_id": {"$in": [ids[i] for i in held]}, "by": self._token})

    def _claim(
        self, claims: Collection[Document], ids: Sequence[Any], wanted: list[int]
    ) -> list[int]:
        now = datetime.datetime.now(datetime.UTC)
        documents = [{"_id": ids[i], "by": self._token, "at": now} for i in wanted]
        try:
            claims.insert_many(documents, ordered=False)
            return wanted
        except BulkWriteError as exc:
            refused = {int(e["index"]) for e in exc.details.get("writeErrors", [])}
            return [wanted[n] for n in range(len(wanted)) if n not in refused]

    @staticmethod
    def _take_over_expired(claims: Collection[Document], ids: list[Any]) -> None:
        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=LEASE_SECONDS)
        for _id in ids:  # each alone: FerretDB 1.24 scans a collection for $in
            claims.delete_one({"_id": _id, "at": {"$lt": cutoff}})


def loses_concurrent_updates(probe: Collection[Document]) -> bool:
    """Concurrent `$inc`s of one document of the pipeline's own: is any lost?"""
    key = "ingest-concurrency-probe-" + uuid.uuid4().hex
    probe.insert_one({"_id": key, "n": 0})

    def increment() -> None:
        for _ in range(PROBE_INCREMENTS):
            probe.update_one({"_id": key}, {"$inc": {"n": 1}})

    try:
        threads = [threading.Thread(target=increment) for _ in range(PROBE_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stored = probe.find_one({"_id": key})
        return stored is None or stored.get("n") != PROBE_THREADS * PROBE_INCREMENTS
    finally:
        probe.delete_one({"_id": key})
