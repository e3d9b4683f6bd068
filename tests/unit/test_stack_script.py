"""scripts/stack.sh's pieces, run by sourcing the script (it only defines its
functions then): the ElasticMQ configuration is written without running anything,
and ElasticMQ's heap follows the machine's memory or STACK_SQS_HEAP."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

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


def _meminfo(tmp_path: Path, kilobytes: int) -> str:
    path = tmp_path / "meminfo"
    path.write_text(
        f"MemTotal:       {kilobytes} kB\nMemFree:         1000000 kB\nMemAvailable:   {kilobytes // 2} kB\n"
    )
    return str(path)


@pytest.mark.parametrize(
    ("mem_total_kb", "heap_mb"),
    [
        (24_683_584, 6026),  # this machine: a quarter of 23.5 GiB
        (8 * 1024 * 1024, 2048),
        (1024 * 1024, 512),  # 1 GiB machine: the floor
        (128 * 1024 * 1024, 8192),  # 128 GiB: the cap
    ],
)
def test_elasticmq_heap_is_a_quarter_of_memory_within_bounds(
    tmp_path: Path, mem_total_kb: int, heap_mb: int
) -> None:
    done = stack_function(
        "sqs_heap_mb", _meminfo(tmp_path, mem_total_kb), env={"STACK_SQS_HEAP": ""}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(heap_mb)


def test_elasticmq_heap_without_meminfo_is_the_floor_and_says_so(tmp_path: Path) -> None:
    done = stack_function("sqs_heap_mb", str(tmp_path / "missing"), env={"STACK_SQS_HEAP": ""})
    assert done.returncode == 0 and done.stdout.strip() == "512"
    assert "STACK_SQS_HEAP" in done.stderr


@pytest.mark.parametrize(("value", "heap_mb"), [("3g", 3072), ("1536m", 1536), ("2048", 2048)])
def test_heap_setting_overrides_the_memory(tmp_path: Path, value: str, heap_mb: int) -> None:
    done = stack_function(
        "sqs_heap_mb", _meminfo(tmp_path, 24_683_584), env={"STACK_SQS_HEAP": value}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(heap_mb)


@pytest.mark.parametrize("value", ["lots", "2 g", "-1", "32m"])
def test_a_bad_heap_setting_is_one_line_naming_it(tmp_path: Path, value: str) -> None:
    done = stack_function(
        "sqs_heap_mb", _meminfo(tmp_path, 24_683_584), env={"STACK_SQS_HEAP": value}
    )
    assert done.returncode != 0 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert f"STACK_SQS_HEAP={value}" in done.stderr


def test_elasticmq_starts_with_the_chosen_heap_and_records_it() -> None:
    """No server is started here (a test of its own, tests/integration/test_stack_status.py,
    reads a running one): the start command uses sqs_heap_mb's answer and writes it down."""
    text = STACK_SH.read_text()
    up = text[text.index("sqs_up() {") : text.index("sqs_down() {")]
    assert "heap=$(sqs_heap_mb)" in up
    assert re.search(r'java -Xms64m -Xmx"\$\{heap\}m"', up)
    assert "-Xmx512m" not in text
    assert 'echo "$heap" >"$RUN/elasticmq.heap"' in up


def test_status_says_an_elasticmq_that_ran_out_of_heap_died(tmp_path: Path) -> None:
    """`status` after ElasticMQ exited on OutOfMemoryError (its pid file left behind)."""
    run, logs = tmp_path / "run", tmp_path / "logs"
    run.mkdir()
    logs.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run / "elasticmq.pid").write_text(f"{dead.pid}\n")
    (run / "elasticmq.heap").write_text("512\n")
    (logs / "elasticmq.log").write_text(
        "Terminating due to java.lang.OutOfMemoryError: Java heap space\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_SQS"}
    script = f'source "{STACK_SH}"; RUN="{run}"; LOGS="{logs}"; SQS_PORT=1; sqs_status'
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sqs:      not running: ElasticMQ (pid {dead.pid}) died;")
    assert "ran out of heap" in done.stdout and "512 MiB" in done.stdout
    assert "STACK_SQS_HEAP" in done.stdout


# ---------------------------------------------------------------- S3 (moto's server)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _in_tmp(tmp_path: Path, calls: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`calls` in a bash that sourced the script, its state in tmp_path instead of .stack/."""
    run, logs = tmp_path / "run", tmp_path / "logs"
    script = (
        f'source "{STACK_SH}"; STACK="{tmp_path}"; RUN="{run}"; LOGS="{logs}"; '
        f"START_TIMEOUT=60; {calls}"
    )
    base = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL_S3"}
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=120, env={**base, **env}
    )


def test_s3_up_status_env_and_down_run_moto_on_its_own_port(tmp_path: Path) -> None:
    port = str(_free_port())
    env = {"STACK_S3_PORT": port}
    up = _in_tmp(tmp_path, "s3_up", env)
    try:
        assert up.returncode == 0, up.stderr
        pid = (tmp_path / "run" / "moto.pid").read_text().strip()
        assert (tmp_path / "run" / "moto.port").read_text().strip() == port
        status = _in_tmp(tmp_path, "s3_status", env)
        assert status.stdout.startswith(
            f"s3:       ours, moto's server at http://127.0.0.1:{port} (pid {pid}, answering)"
        ), status.stdout
        again = _in_tmp(tmp_path, "s3_up", env)  # idempotent: the same server
        assert again.returncode == 0 and "already running" in again.stderr
        exported = _in_tmp(tmp_path, "cmd_env", env)
        assert f"export AWS_ENDPOINT_URL_S3=http://127.0.0.1:{port}\n" in exported.stdout
    finally:
        down = _in_tmp(tmp_path, "s3_down", env)
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "run" / "moto.pid").exists()
    gone = _in_tmp(tmp_path, "s3_status", env)
    assert gone.stdout == "s3:       not running\n"


def test_s3_without_the_venv_is_one_line_naming_make_venv(tmp_path: Path) -> None:
    env = {"STACK_S3_PORT": str(_free_port()), "STACK_MOTO_SERVER": str(tmp_path / "none")}
    done = _in_tmp(tmp_path, "s3_up", env)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"[stack] ERROR: {tmp_path / 'none'} not found; run make venv (moto[server] is in the dev extra)"
    ]


def test_an_external_s3_is_neither_started_nor_replaced_in_env(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL_S3": "https://s3.example.invalid", "STACK_S3_PORT": "1"}
    up = _in_tmp(tmp_path, "s3_up", env)
    assert up.returncode == 0 and "external" in up.stderr
    assert not (tmp_path / "run" / "moto.pid").exists()
    exported = _in_tmp(tmp_path, "cmd_env", env)
    assert "export AWS_ENDPOINT_URL_S3=https://s3.example.invalid\n" in exported.stdout


def test_the_makefile_builds_the_venv_before_the_stack_starts_moto() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^stack-up: venv$", makefile, re.MULTILINE)
    assert re.search(r"^test: venv stack-up$", makefile, re.MULTILINE)
