"""The shared workload: ~1 KB user-operation (audit log) records, deterministic per seed.

Every contender drains the same documents, so the figures compare consumers, not data."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from bson.objectid import ObjectId

from producer import wire

COLLECTION: Final = "operations"
_ACTIONS: Final = (
    "login", "logout", "view_page", "update_profile", "change_password", "create_order",
    "cancel_order", "add_to_cart", "remove_from_cart", "checkout", "search", "export_report",
)  # fmt: skip
_AGENTS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
_PATHS: Final = ("/api/v2/orders", "/api/v2/cart", "/account/settings", "/search", "/reports")
_COUNTRIES: Final = ("DE", "FR", "US", "JP", "BR", "IN", "CN", "GB")
_START: Final = datetime(2025, 1, 1, tzinfo=UTC)
_WORDS: Final = (
    "order", "item", "price", "updated", "shipping", "address", "quantity", "discount",
    "coupon", "payment", "card", "refund", "status", "pending", "approved", "customer",
)  # fmt: skip


def make_record(rng: random.Random, index: int) -> dict[str, Any]:
    """One operation record; its wire line is about 1 KB."""
    at = _START + timedelta(seconds=index * 0.25, microseconds=rng.randrange(1_000_000))
    user = rng.randrange(1, 200_000)
    action = rng.choice(_ACTIONS)
    return {
        "_id": ObjectId(),
        "user_id": f"u-{user:08d}",
        "action": action,
        "ip": ".".join(str(rng.randrange(1, 224 if i == 0 else 255)) for i in range(4)),
        "user_agent": rng.choice(_AGENTS),
        "created_at": at,
        "received_at": at + timedelta(milliseconds=rng.randrange(1, 400)),
        "request": {
            "method": rng.choice(("GET", "POST", "PUT", "DELETE")),
            "path": rng.choice(_PATHS) + f"/{rng.randrange(10**6)}",
            "status": rng.choice((200, 200, 200, 201, 204, 400, 403, 404, 500)),
            "latency_ms": round(rng.uniform(0.5, 900.0), 2),
        },
        "metadata": {
            "session_id": f"{rng.getrandbits(128):032x}",
            "tenant": f"tenant-{rng.randrange(50):02d}",
            "tags": rng.sample(_WORDS, 3),
            "geo": {"country": rng.choice(_COUNTRIES), "city_id": rng.randrange(10**5)},
            "changes": [
                {
                    "field": rng.choice(_WORDS),
                    "old": rng.randrange(1000),
                    "new": rng.randrange(1000),
                }
                for _ in range(3)
            ],
        },
        "note": " ".join(rng.choice(_WORDS) for _ in range(40)),
    }


def records(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for index in range(count):
        yield make_record(rng, index)


def generate(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` records; the same seed gives the same documents (fresh ObjectIds aside)."""
    return list(records(count, seed))


def record_lines(documents: list[dict[str, Any]]) -> list[str]:
    """The wire lines ({"c": ..., "d": ...}) of the documents, one per record."""
    return [wire.encode_record(COLLECTION, doc) for doc in documents]
