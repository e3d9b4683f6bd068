"""Updates and deletes on the real stack, as an adversary delivers them: two `ingest run`
processes, every message at least twice, shuffled (FIFO: in order, by its group).

- counters: $inc of random amounts, each counted exactly once;
- versioned $set updates: each document ends at its highest version's state;
- deletes, then older writes delivered late (older versions, SQS's redeliveries): none
  reappears; a document sent again after its delete does; the tombstones go after
  their period (FerretDB keeps no TTL index: `ingest run`'s sweep);
- inserts, updates and deletes over many _ids: the same as applying them in version
  order, once each, in memory;
- a bad update among good ones: only it is dead-lettered, with the server's reason;
- a FIFO queue with the _id as group: order is native, for updates without a version.

Sizes grow under RELIABILITY_FULL=1 (the issue's: 10 x 1,000 counters, 1,000 x 10
versions, 1,000 deletes, 5,000 _ids)."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bson import ObjectId

from ingest.queues.base import REASON_ATTRIBUTE
from ingest.sinks.memory_updates import apply_update
from producer import operations, wire
from producer.encode import Encoder
from producer.packing import Packer
from tests.support.harness import (
    SEED,
    Body,
    Consumer,
    crashes,
    running,
    scale,
    send_bodies,
    wait_until,
)
from tests.support.queues import drain_queue

COUNTERS, INCREMENTS = 10, scale(200, 1000)
VERSIONED, VERSIONS = scale(200, 1000), 10
DELETED = scale(300, 1000)
MIXED_IDS = scale(1000, 5000)
Op = tuple[str, Any]  # (collection, an Operation or a document to insert)


def bodies(records: Sequence[Op], per_message: int, seed: int) -> list[Body]:
    """Format 2 messages of `per_message` records, each message twice, all shuffled."""
    encoder = Encoder(wire.BSON_RECORDS)
    packer = Packer(1 << 18, wire.ZSTD, version=wire.BSON_RECORDS)
    found: list[Body] = []
    for start in range(0, len(records), per_message):
        items = [
            encoder.operation(c, r) if isinstance(r, wire.Operation) else encoder.item(c, r)[0]
            for c, r in records[start : start + per_message]
        ]
        found += [(m.body, m.attributes) for m in packer.pack(items)]
    shuffle = random.Random(seed)
    again = list(found)
    shuffle.shuffle(found)
    shuffle.shuffle(again)
    return found + again


def consumers(
    queue_url: str, mongo_uri: str, database: str, logs: Path, *extra: str
) -> list[Consumer]:
    return [
        Consumer(queue_url, mongo_uri, database, logs / f"consumer-{n}.log",
                 extra_args=["--writers", "4", "--max-pollers", "0", *extra])
        for n in range(2)
    ]  # fmt: skip


def drained(sqs_client: Any, url: str) -> Callable[[], bool]:
    def empty() -> bool:
        found = sqs_client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return sum(int(v) for v in found.values()) == 0

    return empty


def test_counters_equal_the_exact_sum_of_their_increments(
    make_queue: Any, mongo_db: Any, mongo_uri: str, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=10)
    amounts = random.Random(SEED)
    sums = {f"counter-{n}": 0 for n in range(COUNTERS)}
    records: list[Op] = []
    for _ in range(INCREMENTS):
        for name in sums:
            amount = amounts.randint(1, 1000)
            sums[name] += amount
            records.append(("counters", operations.update(name, {"$inc": {"n": amount}})))
    amounts.shuffle(records)
    with running(consumers(queue.url, mongo_uri, mongo_db.name, tmp_path)) as pool:
        send_bodies(sqs_client, queue.url, bodies(records, 50, SEED))
        assert wait_until(drained(sqs_client, queue.url), 240, 1.0), "the queue did not drain"
    stored = {d["_id"]: d["n"] for d in mongo_db.counters.find()}
    assert stored == sums
    assert not drain_queue(sqs_client, queue.dead_letter_url)
    assert crashes(pool) == 0


def test_versioned_updates_end_at_the_highest_version(
    make_queue: Any, mongo_db: Any, mongo_uri: str, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=10)
    ids = [ObjectId() for _ in range(VERSIONED)]
    records: list[Op] = [
        (
            "accounts",
            operations.update(i, {"$set": {"state": f"v{v}"}, "$inc": {"n": 1}}, version=v),
        )
        for i in ids
        for v in range(1, VERSIONS + 1)
    ]
    random.Random(SEED).shuffle(records)
    top = {"_ingest.v": VERSIONS, "state": f"v{VERSIONS}"}
    with running(consumers(queue.url, mongo_uri, mongo_db.name, tmp_path)) as pool:
        send_bodies(sqs_client, queue.url, bodies(records, 40, SEED))
        reached = wait_until(lambda: mongo_db.accounts.count_documents(top) == len(ids), 240, 1.0)
        assert reached, f"{mongo_db.accounts.count_documents(top)} of {len(ids)} at the top"
        assert wait_until(drained(sqs_client, queue.url), 60, 0.5)
    assert mongo_db.accounts.count_documents({}) == len(ids)
    # $inc counted once per version that was applied in order: at least once, at most ten.
    assert all(1 <= d["n"] <= VERSIONS for d in mongo_db.accounts.find())
    assert not drain_queue(sqs_client, queue.dead_letter_url)
    assert crashes(pool) == 0


def _hold(sqs_client: Any, url: str, count: int) -> list[str]:
    """Receive `count` messages and keep them in flight (receipt handles): SQS gives
    them again, with their first SentTimestamp, when their visibility is ended."""
    held: list[str] = []
    while len(held) < count:
        got = sqs_client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600, WaitTimeSeconds=1
        ).get("Messages", [])
        held += [m["ReceiptHandle"] for m in got]
    return held


def _redeliver(sqs_client: Any, url: str, held: list[str]) -> None:
    for handle in held:
        sqs_client.change_message_visibility(
            QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0
        )


def test_deleted_documents_stay_deleted_and_their_tombstones_expire(
    make_queue: Any, mongo_db: Any, mongo_uri: str, sqs_client: Any, tmp_path: Path
) -> None:
    """Late writes of a deleted document: versioned updates older than the delete, and
    SQS's redeliveries of the messages that created it (sent before the delete). None
    brings it back. A document sent again after its delete does come back: writes
    without a version are ordered by when SQS took them."""
    queue = make_queue(visibility_timeout=10)
    ids = [ObjectId() for _ in range(DELETED)]
    created: list[Op] = [("users", {"_id": i, "name": "ann"}) for i in ids]
    deleted: list[Op] = [("users", operations.delete(i, version=10)) for i in ids]
    late: list[Op] = []
    for i in ids:  # older updates of every kind, delivered after the delete
        late.append(("users", operations.update(i, {"$set": {"name": "late"}}, version=9)))
        late.append(("users", operations.update(i, {"$inc": {"logins": 1}})))
    again = ids[:10]
    recreated: list[Op] = [("users", {"_id": i, "name": "back"}) for i in again]
    tombstones = mongo_db["_ingest_tombstones.users"]
    period = 20.0
    creations = bodies(created, 50, SEED)  # each message twice: its first copies ...
    once = creations[: len(creations) // 2]
    send_bodies(sqs_client, queue.url, once)
    held = _hold(sqs_client, queue.url, len(once))  # ... held until after the delete
    send_bodies(sqs_client, queue.url, creations[len(once) :])
    pool = consumers(
        queue.url, mongo_uri, mongo_db.name, tmp_path, "--tombstone-seconds", str(period)
    )
    with running(pool):
        assert wait_until(lambda: mongo_db.users.count_documents({}) == len(ids), 120, 0.5)
        send_bodies(sqs_client, queue.url, bodies(deleted, 50, SEED + 1))
        assert wait_until(lambda: mongo_db.users.count_documents({}) == 0, 120, 0.5)
        assert tombstones.count_documents({}) == len(ids)
        _redeliver(sqs_client, queue.url, held)
        send_bodies(sqs_client, queue.url, bodies(late, 60, SEED + 2))
        assert wait_until(drained(sqs_client, queue.url), 120, 0.5), "the late writes did not drain"
        assert mongo_db.users.count_documents({}) == 0, "a late write brought a document back"
        send_bodies(sqs_client, queue.url, bodies(recreated, 5, SEED + 3))
        assert wait_until(lambda: mongo_db.users.count_documents({}) == len(again), 60, 0.5)
        # After their period, the sweep deletes them (FerretDB refuses a TTL index).
        assert wait_until(lambda: tombstones.count_documents({}) == 0, period + 60, 1.0)
    stored = {d["_id"]: d["name"] for d in mongo_db.users.find()}
    assert stored == {i: "back" for i in again}
    assert not drain_queue(sqs_client, queue.dead_letter_url)
    assert crashes(pool) == 0


def _mixed(rng: random.Random) -> tuple[list[Op], dict[Any, dict[str, Any] | None]]:
    """Inserts, updates and deletes over MIXED_IDS _ids, each with its own version, and
    their result applied in version order, once each, in memory. The highest version
    wins and a late lower one is dropped whole (stale), so each update sets every field
    a document has (a partial one would lose a late sibling's fields, as merge does)."""
    records: list[Op] = []
    expected: dict[Any, dict[str, Any] | None] = {}
    for n in range(MIXED_IDS):
        _id = f"doc-{n}"
        state: dict[str, Any] | None = None
        for version in range(1, rng.randint(2, 6) + 1):
            kinds = (
                ("insert", "update", "update", "delete") if version > 1 else ("insert", "update")
            )
            kind = rng.choice(kinds)
            if kind == "insert":
                document = {"_id": _id, "v": version, "name": f"n{version}", "hits": 0}
                records.append(("mixed", document))
                state = copy.deepcopy(document)
            elif kind == "update":
                change: dict[str, Any] = {"$set": {"name": f"u{version}", "hits": version}}
                if rng.random() < 0.3:
                    change["$unset"] = {"extra": ""}
                else:
                    change["$set"]["extra"] = version
                records.append(("mixed", operations.update(_id, change, version=version)))
                base = state if state is not None else {"_id": _id}
                with_version = {**change, "$set": {**change["$set"], "v": version}}
                state = apply_update(base, with_version, inserting=state is None)
            else:
                records.append(("mixed", operations.delete(_id, version=version)))
                state = None
        expected[_id] = state
    return records, expected


def test_a_mix_matches_applying_it_in_version_order_once_in_memory(
    make_queue: Any, mongo_db: Any, mongo_uri: str, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=10)
    rng = random.Random(SEED)
    records, expected = _mixed(rng)
    rng.shuffle(records)
    replace = ("--write-mode", "replace", "--version-field", "v")
    with running(consumers(queue.url, mongo_uri, mongo_db.name, tmp_path, *replace)) as pool:
        send_bodies(sqs_client, queue.url, bodies(records, 40, SEED))
        assert wait_until(drained(sqs_client, queue.url), 300, 1.0), "the queue did not drain"
    stored = {d["_id"]: d for d in mongo_db.mixed.find()}
    wanted = {k: v for k, v in expected.items() if v is not None}
    assert stored.keys() == wanted.keys()
    different = [k for k in wanted if stored[k] != wanted[k]]
    assert not different, (
        f"{len(different)} differ, e.g. {stored[different[0]]} != {wanted[different[0]]}"
    )
    assert not drain_queue(sqs_client, queue.dead_letter_url)
    assert crashes(pool) == 0


def test_a_bad_update_among_good_ones_is_dead_lettered_alone_with_the_servers_reason(
    make_queue: Any, mongo_db: Any, mongo_uri: str, sqs_client: Any, tmp_path: Path
) -> None:
    queue = make_queue(visibility_timeout=10)
    good: list[Op] = [
        ("things", operations.update(f"t{n}", {"$inc": {"n": 1}})) for n in range(300)
    ]
    clash = operations.update("bad", {"$set": {"x": 1}, "$inc": {"x": 1}})  # a field clash
    records = [*good[:150], ("things", clash), *good[150:]]
    with running(consumers(queue.url, mongo_uri, mongo_db.name, tmp_path)) as pool:
        send_bodies(sqs_client, queue.url, bodies(records, 30, SEED))
        assert wait_until(drained(sqs_client, queue.url), 120, 0.5), "the queue did not drain"
        letters = drain_queue(sqs_client, queue.dead_letter_url, wait=2)
    reasons = [m["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] for m in letters]
    # Delivered twice: it may be dead-lettered twice, and nothing else is.
    assert 1 <= len(letters) <= 2 and len(set(reasons)) == 1
    assert reasons[0] == (
        "refused by the database (error 40): Updating the path 'x' would create a conflict at 'x'"
    )
    (letter,) = {wire.readable(m["Body"], _attributes(m)) for m in letters}
    assert '"op":"update"' in letter and str(clash.id) in letter
    assert mongo_db.things.count_documents({"n": 1}) == 300
    assert mongo_db.things.find_one({"_id": "bad"}) is None
    assert crashes(pool) == 0


def _attributes(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.get("MessageAttributes", {}).items()}


def test_a_fifo_group_per_id_keeps_the_order_of_updates_without_a_version(
    make_queue: Any, mongo_db: Any, mongo_uri: str, sqs_client: Any, tmp_path: Path
) -> None:
    """Standard queues need versions for order; on a FIFO queue with the document's _id
    as MessageGroupId, SQS delivers each group in order: the last $set wins unversioned."""
    queue = make_queue(visibility_timeout=10, fifo=True)
    encoder = Encoder(wire.BSON_RECORDS, fifo=True)
    packer = Packer(1 << 18, version=wire.BSON_RECORDS, fifo=True)
    ids = [f"doc-{n}" for n in range(scale(50, 200))]
    steps = 8
    messages = []
    for step in range(steps):
        for _id in ids:
            update = operations.update(_id, {"$set": {"step": step}}, ordered=False)
            item = encoder.operation("steps", update, partition_key=_id)
            messages += packer.pack([item])
    with running(consumers(queue.url, mongo_uri, mongo_db.name, tmp_path)) as pool:
        for start in range(0, len(messages), 10):
            entries = [
                {"Id": str(n), "MessageBody": m.body, "MessageAttributes": m.attributes,
                 "MessageGroupId": m.group_id, "MessageDeduplicationId": m.dedup_id}
                for n, m in enumerate(messages[start : start + 10])
            ]  # fmt: skip
            assert not sqs_client.send_message_batch(QueueUrl=queue.url, Entries=entries).get(
                "Failed"
            )
        last = {"step": steps - 1}
        assert wait_until(lambda: mongo_db.steps.count_documents(last) == len(ids), 180, 1.0)
        assert wait_until(drained(sqs_client, queue.url), 60, 0.5)
    assert mongo_db.steps.count_documents({}) == len(ids)
    assert not drain_queue(sqs_client, queue.dead_letter_url)
    assert crashes(pool) == 0
