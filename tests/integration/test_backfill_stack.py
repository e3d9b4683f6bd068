"""Backfill on the real servers: interrupted with SIGINT, resumed, re-run; the
consumer drains into a fresh database and every line is exactly one document.

BACKFILL_CHECK_LINES sets the size: 20,000 in `make test`, 200,000 in `make backfill-check`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import wait_until

LINES = int(os.environ.get("BACKFILL_CHECK_LINES", "20000"))
INGEST = str(Path(sys.executable).parent / "ingest")


def _write_input(path: Path, lines: int) -> None:
    with path.open("w") as out:
        for n in range(lines):
            # Every 10th record brings its own _id, the rest get derived ones.
            own = f'"_id": "op-{n}", ' if n % 10 == 0 else ""
            out.write(f'{{{own}"user": "u{n % 977}", "op": "click", "n": {n}, '
                      f'"at": {{"$date": "2024-01-01T00:00:00Z"}}}}\n')  # fmt: skip


def _run(args: list[str], env: dict[str, str], timeout: float = 600) -> dict[str, Any]:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}


def _drain(queue_url: str, env: dict[str, str]) -> None:
    args = [INGEST, "run", "--queue-url", queue_url, "--exit-when-idle", "2",
            "--wait-seconds", "1", "--metrics-port", "0"]  # fmt: skip
    _run(args, env)


def _checkpoint_position(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["positions"].get("ops.jsonl", 0))
    except (OSError, ValueError):
        return 0


@pytest.mark.timeout(300 + LINES // 400)
def test_interrupted_backfill_resumes_and_reruns_add_nothing(
    make_queue: Any, mongo_db: Any, tmp_path: Path
) -> None:
    queue = make_queue()
    data = tmp_path / "ops.jsonl"
    _write_input(data, LINES)
    checkpoint = tmp_path / "cp.json"
    env = dict(os.environ, INGEST_DATABASE=mongo_db.name)
    backfill = [INGEST, "backfill", str(data), "--queue-url", queue.url, "--collection", "ops",
                "--checkpoint", str(checkpoint), "--checkpoint-every", str(LINES // 40),
                "--no-progress"]  # fmt: skip

    # About 8 s at this rate, so SIGINT lands near the middle.
    first = subprocess.Popen([*backfill, "--rate", str(LINES // 8)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def halfway() -> bool:
        assert first.poll() is None, first.communicate()[1][-2000:]
        return _checkpoint_position(checkpoint) >= LINES // 2

    assert wait_until(halfway, 120, 0.05), "backfill made no progress"
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    interrupted = json.loads(out.strip().splitlines()[-1])
    assert interrupted["interrupted"] and LINES // 2 <= interrupted["sent"] < LINES
    stopped_at = _checkpoint_position(checkpoint)
    assert stopped_at == interrupted["sent"]  # the checkpoint covers everything flushed

    resumed = _run(backfill, env)
    assert resumed["skipped"] == stopped_at
    assert resumed["sent"] == LINES - stopped_at
    _drain(queue.url, env)
    assert mongo_db.ops.count_documents({}) == LINES
    assert mongo_db.ops.count_documents({"_id": "op-0"}) == 1

    again = _run(backfill, env)  # the checkpoint says done: nothing is sent
    assert again["sent"] == 0
    checkpoint.unlink()  # even from scratch, the same _ids: no new documents
    fresh = _run(backfill, env)
    assert fresh["sent"] == LINES and fresh["ids_derived"] == LINES - LINES // 10
    _drain(queue.url, env)
    assert mongo_db.ops.count_documents({}) == LINES
    # Client-side: FerretDB's distinct is too slow at 200,000.
    assert {d["n"] for d in mongo_db.ops.find({}, {"n": 1, "_id": 0})} == set(range(LINES))
