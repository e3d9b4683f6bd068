"""Something else loading the same MongoDB server: heavy inserts into another database.
Slows MongoDB on purpose for the adaptive ceiling's demo and its integration test."""

from __future__ import annotations

import threading
from typing import Any

from pymongo import MongoClient


class CompetingLoad:
    def __init__(self, uri: str, database: str, threads: int = 6) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(uri)
        self._database = database
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    @property
    def started(self) -> bool:
        return self._threads[0].ident is not None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _work(self) -> None:
        docs = [{"pad": "y" * 400, "n": i} for i in range(500)]
        while not self._stop.is_set():
            self._client[self._database].junk.insert_many([dict(d) for d in docs], ordered=False)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(10)

    def __enter__(self) -> CompetingLoad:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def close(self) -> None:
        """Stops, then drops the load's database: only after the run, since on FerretDB
        dropping it stalls other writes for about a second."""
        self.stop()
        self._client.drop_database(self._database)
        self._client.close()
