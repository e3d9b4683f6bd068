"""scripts/stack.sh's pieces, run by sourcing the script (it only defines its
functions then): the ElasticMQ configuration is written without running anything."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK_SH = ROOT / "scripts" / "stack.sh"


def stack_function(
    call: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs `call` (a function of stack.sh, with args) in a bash that sourced the script."""
    script = f'source "{STACK_SH}"; {call} "$@"'
    return subprocess.run(
        ["bash", "-c", script, "stack.sh", *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_sourcing_the_script_runs_no_command() -> None:
    done = stack_function("true")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done


def test_elasticmq_conf_runs_nothing_from_its_heredoc(tmp_path: Path) -> None:
    # An `ingest` on PATH that leaves a mark: backticks in the heredoc used to run it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ran"
    fake = bin_dir / "ingest"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\necho FROM-A-COMMAND\n')
    fake.chmod(0o755)
    conf = tmp_path / "elasticmq.conf"
    done = stack_function(
        "elasticmq_conf", str(conf),
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "STACK_SQS_PORT": "19999"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), f"writing the conf ran: ingest {marker.read_text()}"
    assert done.stderr == ""
    text = conf.read_text()
    assert "`" not in text and "FROM-A-COMMAND" not in text
    assert '"ingest init" creates the queue' in text
    assert re.search(r"^\s*port = 19999$", text, re.MULTILINE)
    assert re.search(r"^\s*bind-port = 19999$", text, re.MULTILINE)
    assert 'accountId = "000000000000"' in text and "queues {}" in text


def test_no_unquoted_heredoc_holds_a_command_substitution() -> None:
    """An unquoted heredoc expands $VARS but also runs `...` and $(...): none may hold them."""
    lines = STACK_SH.read_text().splitlines()
    found = 0
    index = 0
    while index < len(lines):
        start = re.search(r"<<-?\s*(['\"]?)(\w+)\1", lines[index])
        index += 1
        if not start:
            continue
        quoted, end = start.group(1), start.group(2)
        body = []
        while index < len(lines) and lines[index].strip() != end:
            body.append(lines[index])
            index += 1
        if quoted:
            continue
        found += 1
        for line in body:
            assert "`" not in line and "$(" not in line, f"unquoted heredoc runs: {line!r}"
    assert found >= 3  # the pom, the ElasticMQ conf, PostgreSQL's stack.conf
