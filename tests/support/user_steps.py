"""Runs the installed `ingest` command as a user would, in a clean environment, and
checks what a user sees: the exit code, a few lines, no traceback, the time taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INGEST = str(Path(sys.executable).parent / "ingest")

# Local credentials only: nothing here may reach a real AWS account.
LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def expect(self, code: int, *needles: str, within: float, lines: int = 1) -> None:
        """Exit `code` within `within` seconds, at most `lines` lines on stderr, each
        needle in them, no traceback anywhere."""
        shown = f"exit {self.code} after {self.seconds:.1f}s\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        assert "Traceback" not in self.stdout + self.stderr, shown
        assert self.code == code, shown
        assert self.seconds <= within, shown
        assert 1 <= len(self.lines) <= lines, shown
        for needle in needles:
            assert needle in self.stderr, f"{needle!r} not in stderr\n{shown}"


def clean_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """No AWS_* or INGEST_* from the caller (`make test` exports the stack's), a HOME of
    its own (no ~/.aws), and what the step sets."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "INGEST_", "BOTO"))
    }
    env["HOME"] = str(home)
    env["XDG_STATE_HOME"] = str(home / "state")
    env.update(extra or {})
    return env


def ingest(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 120,
    stdin: str | None = None,
) -> Outcome:
    started = time.monotonic()
    done = subprocess.run([INGEST, *args], env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, input=stdin)  # fmt: skip
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def probe(port: int, path: str, timeout: float = 5.0) -> tuple[int | None, dict[str, Any], float]:
    """GET a health endpoint as a prober does: (status, JSON body, seconds taken);
    status None when nothing answered."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError:
        return None, {}, time.monotonic() - started
    return status, json.loads(body), time.monotonic() - started
