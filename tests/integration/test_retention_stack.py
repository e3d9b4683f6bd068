"""`ingest init --expire-after DAYS --expire-field FIELD` on the real servers. MongoDB
gets a TTL index on each named collection (a second run with another period changes
it); FerretDB 1.24 does not implement expireAfterSeconds, so init says so in one line
and exits 1, after creating the queue and the collections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

INGEST = str(Path(sys.executable).parent / "ingest")


def _init(database: str, queue_name: str, days: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, INGEST_DATABASE=database)
    return subprocess.run(
        [INGEST, "init", "--queue-name", queue_name, "--collection", "audit", "--collection",
         "logins", "--expire-after", days, "--expire-field", "at"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _ttl(db: Any, collection: str) -> list[tuple[list[str], int]]:
    return [
        (list(index["key"]), index["expireAfterSeconds"])
        for index in db[collection].list_indexes()
        if "expireAfterSeconds" in index
    ]


def test_init_expires_audit_logs_or_says_that_the_server_cannot(
    mongo_db: Any, sqs_client: Any
) -> None:
    name = f"t-ttl-{uuid.uuid4().hex[:10]}"
    try:
        done = _init(mongo_db.name, name, "90")
        ferretdb = "ferretdbVersion" in mongo_db.client.admin.command("buildInfo")
        if ferretdb:
            assert done.returncode == 1 and not done.stdout
            assert done.stderr.count("\n") == 1, done.stderr
            assert done.stderr.startswith(
                "ingest: MongoDB at 127.0.0.1:27017 refused to expire audit by at:"
            )
            assert "(error 238 NotImplemented)" in done.stderr
            assert done.stderr.endswith("(FerretDB does not expire documents)\n")
            assert {"audit", "logins"} <= set(mongo_db.list_collection_names())
            assert _ttl(mongo_db, "audit") == []
            return
        assert done.returncode == 0, done.stderr
        made = json.loads(done.stdout)
        assert made["expire"] == {"collections": ["audit", "logins"], "field": "at",
                                  "after_seconds": 90 * 86400}  # fmt: skip
        assert _ttl(mongo_db, "audit") == _ttl(mongo_db, "logins") == [(["at"], 90 * 86400)]
        assert _init(mongo_db.name, name, "30").returncode == 0
        assert _ttl(mongo_db, "audit") == [(["at"], 30 * 86400)]
    finally:
        for suffix in ("", "-dlq"):
            url = sqs_client.get_queue_url(QueueName=name + suffix)["QueueUrl"]
            sqs_client.delete_queue(QueueUrl=url)
