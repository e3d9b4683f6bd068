"""Both wire formats on one queue: a format-1 producer (what other tools write) and a
format-2 producer (the default) send side by side, and every record lands once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bson import Decimal128, ObjectId

from producer import Producer, wire
from tests.support.harness import Consumer, running, wait_until


class FormatCounter:
    """The real client, counting the messages sent in each format."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.formats: dict[str, int] = {}
        self._lock = threading.Lock()

    def send_message_batch(self, **kwargs: Any) -> Any:
        with self._lock:
            for entry in kwargs["Entries"]:
                version = wire.format_of(entry["MessageAttributes"])
                self.formats[version] = self.formats.get(version, 0) + 1
        return self.client.send_message_batch(**kwargs)


def test_format_1_and_format_2_producers_share_a_queue(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue()
    counter = FormatCounter(sqs_client)
    ids: dict[str, list[ObjectId]] = {"1": [], "2": []}

    def web_app(version: str) -> None:
        with Producer(queue.url, sqs_client=counter, journal_dir=tmp_path / version,
                      wire_format=version) as producer:  # fmt: skip
            for n in range(2000):
                document = {"n": n, "format": version, "text": "日本語 ü 😀", "pad": "x" * 300}
                ids[version].append(producer.send("mixed", document))

    threads = [threading.Thread(target=web_app, args=(v,)) for v in ("1", "2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert counter.formats.get("1") and counter.formats.get("2")
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log")
    with running([consumer]):
        assert wait_until(lambda: mongo_db.mixed.count_documents({}) >= 4000, 90)
    assert mongo_db.mixed.count_documents({}) == 4000
    for version, sent in ids.items():
        assert mongo_db.mixed.count_documents({"_id": {"$in": sent}, "format": version}) == 2000
    stored = mongo_db.mixed.find_one({"format": "2"})
    assert stored is not None and stored["text"] == "日本語 ü 😀"


def test_format_2_keeps_bson_types_that_json_cannot(
    sqs_client: Any, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    import datetime

    queue = make_queue()
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000)
    document = {"_id": "types", "at": at, "big": 2**40, "small": 7, "bin": b"\x00\x01", "f": 1.5}
    with Producer(queue.url, sqs_client=sqs_client, journal_dir=tmp_path / "j") as producer:
        producer.send("typed", document)
        if not _is_ferretdb(mongo_db):  # FerretDB cannot store Decimal128 (see README)
            producer.send("typed", {"_id": "dec", "price": Decimal128("9.99")})
    consumer = Consumer(queue.url, mongo_uri, mongo_db.name, tmp_path / "c.log")
    with running([consumer]):
        assert wait_until(lambda: mongo_db.typed.count_documents({}) >= 1, 60)
    stored = mongo_db.typed.find_one({"_id": "types"})
    assert stored is not None
    assert (stored["at"], stored["big"], stored["small"], stored["f"]) == (at, 2**40, 7, 1.5)
    assert bytes(stored["bin"]) == b"\x00\x01"


def _is_ferretdb(db: Any) -> bool:
    return "ferretdbVersion" in db.client.admin.command("buildInfo")
