"""The operator tools on the in-memory seams: they speak only the protocols, so init,
check, status and the dead-letter tools run without SQS or MongoDB."""

from __future__ import annotations

from ingest.errors import QueueRefused
from ingest.queues.base import NO_REASON, Message, QueueDepth
from ingest.queues.memory import MemoryQueue, MemoryService
from ingest.sinks.memory import MemorySink
from ingest.tools import deadletters
from ingest.tools.check import run_checks
from ingest.tools.provision import provision
from ingest.tools.status import collect, render
from producer import wire

LETTER = {"ingest-dead-letter-reason": wire.string_attribute("invalid ObjectId value null")}


def _setup() -> tuple[MemoryService, MemorySink, MemoryQueue, MemoryQueue]:
    service, store = MemoryService(), MemorySink(database="app")
    made = provision(service, store, "orders", ["events"], max_receive_count=3)
    source = service.queue(made.queue_url)
    assert source.dead_letter_queue is not None
    return service, store, source, source.dead_letter_queue


def test_init_creates_the_queue_its_dead_letter_queue_and_the_collections() -> None:
    service, store = MemoryService(), MemorySink(database="app")
    made = provision(service, store, "orders", ["events", "audit"], max_receive_count=3)
    assert made.as_dict() == {
        "queue_url": "memory://orders", "dead_letter_url": "memory://orders-dlq",
        "database": "app", "collections": ["audit", "events"],
    }  # fmt: skip
    assert service.queue(made.queue_url).max_receive_count == 3
    assert provision(service, store, "orders", ["events"]).queue_url == made.queue_url  # idempotent


def test_dead_letters_are_shown_by_reason_without_being_consumed() -> None:
    _, _, _, dead = _setup()
    for n in range(3):
        dead.send(f'{{"c":"x","d":{{"_id":{{"$oid":null}},"n":{n}}}}}', LETTER)
    dead.send("moved by SQS itself")
    summary = deadletters.summarize(deadletters.peek(dead), samples=1)
    assert summary["total"] == 4
    assert [(g["reason"], g["count"]) for g in summary["reasons"]] == [
        ("invalid ObjectId value null", 3), (NO_REASON, 1),
    ]  # fmt: skip
    assert "invalid ObjectId value null" in deadletters.render(summary)
    assert len(dead.receive(10, 0, 30)) == 4  # all still there, and visible


def test_redrive_by_reason_moves_only_the_matching_letters_without_their_reason() -> None:
    service, _, source, dead = _setup()
    dead.send("fixed record", {**LETTER, **wire.message_attributes(wire.IDENTITY, 1)})
    dead.send("other", {"ingest-dead-letter-reason": wire.string_attribute("too big")})
    match = deadletters.reason_matcher("objectid")
    result = deadletters.redrive(service, dead, source, match)
    assert (result.method, result.moved, result.kept, result.failed) == (
        "receive-send-delete",
        1,
        1,
        0,
    )
    (back,) = source.receive(10, 0, 30)
    assert back.body == "fixed record" and back.attribute("ingest-dead-letter-reason") is None
    assert back.attribute(wire.FORMAT_ATTRIBUTE) == "1"
    assert [m.body for m in dead.receive(10, 0, 30)] == ["other"]


def test_redrive_of_everything_uses_the_move_task() -> None:
    service, _, source, dead = _setup()
    for n in range(5):
        dead.send(f"m{n}", LETTER)
    result = deadletters.redrive(service, dead, source)
    assert (result.method, result.moved, result.task_status) == ("move-task", 5, "COMPLETED")
    assert len(source) == 5 and len(dead) == 0


def test_status_reports_depths_counts_and_what_did_not_answer() -> None:
    _, store, source, dead = _setup()
    source.send("a")
    dead.send("b", LETTER)
    store.replica_board().check_in("replica-1", {"ceiling": 100.0, "pool_ceiling": 100.0})
    report = collect(lambda: {source.url: source}, store, store.replica_board(), 15.0)
    assert report["ok"] and report["queues"][source.url]["visible"] == 1
    assert report["queues"][source.url]["dead_letter"]["visible"] == 1
    assert report["collections"] == {"events": 0} and report["replicas"][0]["id"] == "replica-1"
    assert "dead-letter 1" in render(report)
    store.unavailable = True

    def refused() -> dict[str, MemoryQueue]:
        raise QueueRefused("SQS GetQueueAttributes on q: AWS.SimpleQueueService.NonExistentQueue")

    down = collect(refused, store, store.replica_board(), 15.0)
    assert not down["ok"] and len(down["errors"]) == 2
    assert "NonExistentQueue" in render(down)


def test_check_names_each_failure_on_one_line() -> None:
    _, store, source, _ = _setup()
    lines = [c.line() for c in run_checks(lambda: {source.url: source}, store)]
    assert all(line.startswith("ok") for line in lines) and len(lines) == 4
    bare = MemoryQueue("memory://bare")  # no redrive policy
    store.unavailable = True
    checks = list(run_checks(lambda: {bare.url: bare}, store))
    assert [c.ok for c in checks] == [True, False, False]
    assert "no redrive policy" in checks[1].detail and "unavailable" in checks[2].detail


def test_messages_read_from_a_dead_letter_queue_know_their_reason() -> None:
    message = Message("q", "m", "r", "body", LETTER)
    assert message.reason == "invalid ObjectId value null"
    assert Message("q", "m", "r", "body").reason == NO_REASON
    assert QueueDepth(1, 2, 3).total == 6


def test_format_2_dead_letters_are_shown_as_extended_json() -> None:
    _, _, _, dead = _setup()
    raw = wire.pack_bson([("events", wire.encode_document({"_id": "b2", "city": "Zürich"}), None)])
    attributes = {**wire.message_attributes(wire.ZSTD, 1, wire.BSON_RECORDS), **LETTER}
    dead.send(wire.bson_body(raw, wire.ZSTD), attributes)
    (group,) = deadletters.summarize(deadletters.peek(dead))["reasons"]
    assert group["samples"][0]["body"] == '{"c":"events","d":{"_id":"b2","city":"Zürich"}}'
