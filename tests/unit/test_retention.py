"""`ingest init --expire-after DAYS --expire-field FIELD` on the in-memory seams, and its
one-line mistakes (the stack's own behaviour: tests/integration/test_retention_stack.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ingest.errors import ConfigError
from ingest.queues.memory import MemoryService
from ingest.settings import Settings
from ingest.sinks.base import Retention
from ingest.sinks.memory import MemorySink
from ingest.tools.provision import provision, retention_of

INGEST = Path(sys.executable).with_name("ingest")


def test_init_expires_the_named_collections_by_their_date_field() -> None:
    service, store = MemoryService(), MemorySink(database="app")
    retention = retention_of(Settings(expire_after_days=90, expire_field="at"), ["audit"])
    assert retention == Retention("at", 90 * 86400)
    made = provision(service, store, "audit-q", ["audit", "logins"], retention=retention)
    assert made.as_dict()["expire"] == {
        "collections": ["audit", "logins"], "field": "at", "after_seconds": 7_776_000,
    }  # fmt: skip
    assert store.retention("audit") == store.retention("logins") == retention
    again = provision(service, store, "audit-q", ["audit"], retention=Retention("at", 86400))
    assert store.retention("audit") == Retention("at", 86400) == again.retention
    assert "expire" not in provision(service, store, "audit-q", ["other"]).as_dict()
    assert store.retention("other") is None


def test_expiry_without_collections_is_a_mistake_before_anything_is_made() -> None:
    service = MemoryService()
    with pytest.raises(ConfigError, match="name each with --collection"):
        provision(service, MemorySink(), "q", [], retention=Retention("at", 86400))
    assert not service.queues


def test_expiry_settings_are_typed_checked_and_go_together() -> None:
    s = Settings.from_env({"INGEST_EXPIRE_AFTER_DAYS": "30", "INGEST_EXPIRE_FIELD": "meta.at"})
    assert (s.expire_after_days, s.expire_field) == (30, "meta.at")
    mistakes = {
        "--expire-after=0: must be between 1 and 24855": {"expire_after_days": "0", "expire_field": "at"},
        "--expire-after=soon: must be a whole number": {"expire_after_days": "soon", "expire_field": "at"},
        "--expire-after DAYS and --expire-field FIELD go together": {"expire_field": "at"},
        "--expire-field=_id: '_id' cannot be used": {"expire_after_days": "3", "expire_field": "_id"},
    }  # fmt: skip
    for expected, flags in mistakes.items():
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({}, **flags)
        assert str(raised.value).startswith(expected)


def _init(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    return subprocess.run([str(INGEST), "init", *args], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--expire-after", "30"], "--expire-after DAYS and --expire-field FIELD go together"),
        (["--expire-after", "30", "--expire-field", "at"],
         "--expire-after needs the collections to expire: name each with --collection"),
        (["--expire-after", "99999", "--expire-field", "at", "--collection", "audit"],
         "--expire-after=99999: must be between 1 and 24855"),
    ],
)  # fmt: skip
def test_init_names_the_mistake_in_one_line_and_exits_2(args: list[str], line: str) -> None:
    done = _init(*args)
    assert (done.returncode, done.stderr, done.stdout) == (2, f"ingest: {line}\n", "")
