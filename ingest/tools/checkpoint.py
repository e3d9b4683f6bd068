"""The backfill checkpoint: per source file, the last position SQS has accepted.

Written atomically (temp file, fsync, rename), so a crash leaves the old or the
new checkpoint, never half of one. It names the queue it was made for, so a
run against another queue does not silently skip records it never sent there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ingest.errors import CheckpointError

VERSION: Final = 1


def default_path(root: Path, queue_url: str) -> Path:
    """Under ./.ingest-backfill/, named by the input and the queue."""
    key = hashlib.sha1(f"{root.resolve()}\x00{queue_url}".encode()).hexdigest()[:16]
    return Path(".ingest-backfill") / f"{root.name or 'input'}-{key}.json"


@dataclass
class Checkpoint:
    path: Path
    queue_url: str
    positions: dict[str, int] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path, queue_url: str) -> Checkpoint:
        if not path.exists():
            return cls(path, queue_url)
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            saved_queue = str(data["queue_url"])
            positions = {str(k): int(v) for k, v in data["positions"].items()}
            done = {str(name) for name in data["done"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: not a backfill checkpoint ({exc})") from exc
        if saved_queue != queue_url:
            raise CheckpointError(
                f"{path} was written for {saved_queue}, not {queue_url}: "
                "pass another --checkpoint, or delete it to start over"
            )
        return cls(path, queue_url, positions, done)

    def position(self, source_id: str) -> int:
        return self.positions.get(source_id, 0)

    def is_done(self, source_id: str) -> bool:
        return source_id in self.done

    def advance(self, source_id: str, position: int) -> None:
        if position > self.position(source_id):
            self.positions[source_id] = position

    def finish(self, source_id: str) -> None:
        self.done.add(source_id)

    def save(self) -> None:
        data = {
            "version": VERSION,
            "queue_url": self.queue_url,
            "positions": self.positions,
            "done": sorted(self.done),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".checkpoint-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
