"""A user's first hour with the `ingest` command, the steps that need no running
servers: each runs the installed command in a clean environment (own HOME, no AWS or
INGEST variables from outside) and checks the exit code, the few lines printed and
that no traceback shows. Servers that refuse are closed loopback ports; servers that
never answer are a local listener that accepts and stays silent
(tests/support/tcpproxy.py). A command that hangs fails on the subprocess timeout; how
long a step takes is not asserted here (the commands' own timeouts are 4 s a server)."""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.tcpproxy import SilentServer, closed_port
from tests.support.user_steps import LOCAL_AWS, Outcome, clean_env, ingest


def expect(outcome: Outcome, code: int, *needles: str, lines: int = 1) -> None:
    """Exit `code`, at most `lines` lines on stderr holding each needle, no traceback."""
    outcome.expect(code, *needles, within=math.inf, lines=lines)


def together(*steps: Callable[[], Outcome]) -> list[Outcome]:
    """Steps that wait on servers run at the same time: the test takes the longest."""
    with ThreadPoolExecutor(len(steps)) as pool:
        return list(pool.map(lambda step: step(), steps))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    with SilentServer() as server:
        yield server


def _endpoints(port: int, queue: str = "q") -> dict[str, str]:
    return {
        **LOCAL_AWS,
        "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{port}",
        "INGEST_QUEUE_URL": f"http://127.0.0.1:{port}/000000000000/{queue}",
        "INGEST_MONGO_URI": f"mongodb://127.0.0.1:{port}/",
    }


# ------------------------------------------------------------------- no region


@pytest.mark.parametrize(
    "step",
    [
        ["run"],
        ["status"],
        ["init"],
        ["dlq", "show"],
        ["dlq", "redrive"],
        ["dlq", "purge", "--yes"],
        ["backfill", "{input}", "--collection", "ops"],
    ],
    ids=lambda step: " ".join(step[:2]),
)
def test_no_region_is_one_line_naming_both_ways_to_set_it(
    step: list[str], home: Path, tmp_path: Path
) -> None:
    (tmp_path / "ops.jsonl").write_text('{"a": 1}\n')
    port = closed_port()
    env = clean_env(home, _endpoints(port))
    del env["AWS_DEFAULT_REGION"]
    args = [arg.replace("{input}", str(tmp_path / "ops.jsonl")) for arg in step]
    outcome = (
        ingest(*args, "--metrics-port", "0", env=env)
        if step == ["run"]
        else ingest(*args, env=env, cwd=tmp_path)
    )
    expect(outcome, 2, "AWS_DEFAULT_REGION", "--region")


def test_no_region_is_a_configuration_mistake_for_check_too(home: Path) -> None:
    env = clean_env(home, _endpoints(closed_port()))
    del env["AWS_DEFAULT_REGION"]
    outcome = ingest("check", env=env)
    expect(outcome, 2, "checks failed")
    assert "FAIL  sqs: no AWS region: set AWS_DEFAULT_REGION" in outcome.stdout


# ------------------------------------------------------- servers that do not answer


@pytest.mark.parametrize(
    "step",
    [["init"], ["dlq", "show"], ["dlq", "redrive"], ["dlq", "purge", "--yes"]],
    ids=" ".join,
)
def test_operator_commands_name_the_endpoint_and_the_cause(step: list[str], home: Path) -> None:
    port = closed_port()
    if step[-1] not in ("init", "show"):  # the same code path as those two for a hung server
        refused = ingest(*step, env=clean_env(home, _endpoints(port)))
        expect(refused, 1, f"http://127.0.0.1:{port}", "Could not connect")
        return
    with SilentServer() as silent:
        refused, hung = together(
            lambda: ingest(*step, env=clean_env(home, _endpoints(port))),
            lambda: ingest(*step, env=clean_env(home, _endpoints(silent.port))),
        )
    expect(refused, 1, f"http://127.0.0.1:{port}", "Could not connect")
    expect(hung, 1, f"http://127.0.0.1:{silent.port}", "Read timeout")


def test_run_fails_naming_the_queue_endpoint_that_never_answers(
    home: Path, silent: SilentServer
) -> None:
    env = clean_env(home, _endpoints(silent.port))
    outcome = ingest("run", "--metrics-port", "0", env=env)
    expect(outcome, 1, f"no answer from http://127.0.0.1:{silent.port}", "Read timeout")


def test_status_exits_1_and_its_json_carries_both_errors(home: Path) -> None:
    port = closed_port()
    env = clean_env(home, _endpoints(port))
    text, as_json = together(
        lambda: ingest("status", env=env), lambda: ingest("status", "--json", env=env)
    )
    assert text.code == 1 and "Traceback" not in text.stdout + text.stderr
    assert text.stdout.count("error: ") == 2, text.stdout
    assert as_json.code == 1 and "Traceback" not in as_json.stdout + as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    (queue_error, store_error) = report["errors"]
    assert f"no answer from http://127.0.0.1:{port}" in queue_error
    assert f"127.0.0.1:{port}" in store_error and "refused" in store_error
    # One clause, as `ingest check` says it: not pymongo's timeouts and topology.
    assert store_error == (
        f"MongoDB at 127.0.0.1:{port} does not answer: 127.0.0.1:{port}: "
        "[Errno 111] Connection refused"
    )


def test_status_against_servers_that_never_answer(home: Path, silent: SilentServer) -> None:
    outcome = ingest("status", "--json", env=clean_env(home, _endpoints(silent.port)))
    assert outcome.code == 1 and "Traceback" not in outcome.stderr
    (queue_error, store_error) = json.loads(outcome.stdout)["errors"]
    assert f"no answer from http://127.0.0.1:{silent.port}" in queue_error
    assert "Read timeout" in queue_error and "timed out" in store_error


def test_check_prints_one_line_per_check_against_unreachable_servers(home: Path) -> None:
    port = closed_port()
    outcome = ingest("check", env=clean_env(home, _endpoints(port)))
    expect(outcome, 1, "2 of 3 checks failed")
    assert outcome.stdout.splitlines() == [
        "ok    settings: valid",
        f"FAIL  sqs: SQS GetQueueAttributes on http://127.0.0.1:{port}/000000000000/q: "
        f"no answer from http://127.0.0.1:{port}: Could not connect to the endpoint URL: "
        f'"http://127.0.0.1:{port}/"',
        f"FAIL  mongodb: MongoDB at 127.0.0.1:{port} does not answer: "
        f"127.0.0.1:{port}: [Errno 111] Connection refused",
    ]


def test_check_against_servers_that_never_answer(home: Path, silent: SilentServer) -> None:
    outcome = ingest("check", env=clean_env(home, _endpoints(silent.port)))
    expect(outcome, 1, "2 of 3 checks failed")
    failed = [line for line in outcome.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 2 and "Read timeout" in failed[0] and "timed out" in failed[1]


def test_backfill_checks_the_queue_answers_before_reading(home: Path, tmp_path: Path) -> None:
    (tmp_path / "ops.jsonl").write_text('{"a": 1}\n' * 10)
    port = closed_port()
    outcome = ingest("backfill", str(tmp_path / "ops.jsonl"), "--collection", "ops",
                     env=clean_env(home, _endpoints(port)), cwd=tmp_path)  # fmt: skip
    expect(outcome, 1, f"no answer from http://127.0.0.1:{port}")
    assert not (tmp_path / ".ingest-backfill").exists()  # no checkpoint, no journal


# --------------------------------------------------------------- the HTTP server


def test_metrics_port_out_of_range(home: Path, silent: SilentServer) -> None:
    outcome = ingest("run", "--metrics-port", "99999", env=clean_env(home, _endpoints(silent.port)))
    expect(outcome, 2, "--metrics-port=99999: must be between 0 and 65535")
    assert silent.connections == 0


def test_metrics_port_in_use(home: Path, silent: SilentServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = clean_env(home, _endpoints(silent.port))
        outcome = ingest("run", "--metrics-port", str(port), env=env)
    expect(outcome, 2, f"--metrics-port {port}: Address already in use")
    assert silent.connections == 0  # found before SQS or MongoDB was contacted


def test_metrics_host_not_an_address(home: Path, silent: SilentServer) -> None:
    env = clean_env(home, _endpoints(silent.port))
    outcome = ingest("run", "--metrics-host", "256.1.1.1", env=env)
    expect(outcome, 2, "--metrics-host=256.1.1.1: '256.1.1.1' is not an IPv4 address")  # fmt: skip
    assert silent.connections == 0


# ------------------------------------------------------ values checked at the edge


# fmt: off
MISTAKES = [
        (["run", "--max-write-rate", "-5"], {}, "--max-write-rate=-5: must be between 0 and 1000000000"),
        (["run", "--visibility-timeout", "-3"], {}, "--visibility-timeout=-3: must be between 1 and 43200"),
        (["run", "--min-pollers", "5", "--max-pollers", "2"], {}, "--min-pollers 5 is above --max-pollers 2"),
        (["run"], {"INGEST_JOURNAL": "maybe"}, "INGEST_JOURNAL=maybe: must be true or false"),
        (["run", "--mongo-uri", "notamongouri"], {}, "--mongo-uri=notamongouri: must be a MongoDB URI (mongodb://"),
        (["run"], {"INGEST_LOG_LEVEL": "LOUD"}, "INGEST_LOG_LEVEL=LOUD: must be one of DEBUG, INFO, WARNING, ERROR"),
        (["status"], {"INGEST_LOG_LEVEL": "LOUD"}, "INGEST_LOG_LEVEL=LOUD: must be one of"),
        (["run", "--wait-seconds", "30"], {}, "--wait-seconds=30: must be between 0 and 20"),
        (["backfill", "{input}", "--collection", "ops", "--checkpoint-every", "-5"], {},
         "Invalid value for '--checkpoint-every': -5 is not in the range x>=1"),
        (["dlq", "show", "--limit", "-1"], {}, "Invalid value for '--limit': -1 is not in the range x>=1"),
        (["check", "--queue-url", "ftp://host/000000000000/q"], {},
         "--queue-url=ftp://host/000000000000/q: 'ftp://host/000000000000/q' is not a queue URL"),
        # Once: ElasticMQ's client failed on it and init said SQS gave "no answer".
        (["init", "--queue-name", "audit log"], {},
         "Invalid value for '--queue-name': queue name 'audit log': SQS takes only letters, "
         "digits, '-' and '_'"),
        (["init", "--queue-name", "q" * 78], {},
         f"SQS takes at most 80 characters, and its dead-letter queue's name '{'q' * 78}-dlq' needs 82"),
]
# fmt: on


@pytest.mark.parametrize(
    ("args", "variables", "message"),
    MISTAKES,
    ids=[
        "max-write-rate",
        "visibility-timeout",
        "min-above-max-pollers",
        "journal-variable",
        "uri",
        "log-level-run",
        "log-level-status",
        "wait-seconds",
        "checkpoint-every",
        "dlq-limit",
        "queue-url-scheme",
        "queue-name-chars",
        "queue-name-length",
    ],
)
def test_a_mistaken_value_is_refused_before_anything_is_contacted(
    args: list[str],
    variables: dict[str, str],
    message: str,
    home: Path,
    tmp_path: Path,
    silent: SilentServer,
) -> None:
    (tmp_path / "ops.jsonl").write_text('{"a": 1}\n')
    env = clean_env(home, {**_endpoints(silent.port), **variables})
    args = [arg.replace("{input}", str(tmp_path / "ops.jsonl")) for arg in args]
    outcome = ingest(*args, env=env, cwd=tmp_path)
    expect(outcome, 2, message)
    assert silent.connections == 0  # nothing sent, nothing changed
    assert not (tmp_path / ".ingest-backfill").exists()


def test_a_mistaken_flag_is_named_as_the_flag_not_its_variable(
    home: Path, silent: SilentServer
) -> None:
    env = clean_env(home, _endpoints(silent.port))
    outcome = ingest("run", "--target-write-latency", "fast", env=env)
    expect(outcome, 2, "--target-write-latency=fast: 'fast' is not a duration")
    assert "INGEST_TARGET_WRITE_LATENCY" not in outcome.stderr
    from_variable = ingest("run", env={**env, "INGEST_TARGET_WRITE_LATENCY": "fast"})
    expect(from_variable, 2, "INGEST_TARGET_WRITE_LATENCY=fast")


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    import dataclasses

    from ingest.cli.consume import run
    from ingest.settings import PREFIX, Settings, flag_name

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    flags = {option for param in run.params for option in getattr(param, "opts", [])}
    for item in dataclasses.fields(Settings):
        variable = item.metadata.get("variable") or PREFIX + item.name.upper()
        row = next((r for r in rows if f"`{variable}`" in r), None)
        assert row is not None, f"{variable} is not in README.md's configuration table"
        flag = flag_name(item)
        if flag in flags:  # `ingest run` takes it: the row names the flag too
            assert f"`{flag}`" in row, f"{variable}'s row does not name {flag}"
    level = next(r for r in rows if "`INGEST_LOG_LEVEL`" in r)
    assert all(name in level for name in ("DEBUG", "INFO", "WARNING", "ERROR"))


# ------------------------------------------------------------- backfill --dry-run


def test_dry_run_with_bad_lines_needs_no_queue_and_says_valid(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "ops.jsonl"
    source.write_text('{"a": 1}\nnot json\n{"b": 2}\n{"$set": 1}\n')
    outcome = ingest("backfill", str(source), "--collection", "ops", "--dry-run",
                     env=clean_env(home), cwd=tmp_path)  # fmt: skip
    expect(outcome, 1, "2 bad lines", f"bad line {source}:2: not valid", f"bad line {source}:4", lines=3)  # fmt: skip
    summary = json.loads(outcome.stdout)
    assert summary["valid"] == 2 and "sent" not in summary and summary["bad_lines"] == 2
    assert summary["dry_run"] is True
    # stderr is not a terminal here: no progress bar (tqdm draws with \r and a rate).
    assert "\r" not in outcome.stderr and not re.search(r"\d+(\.\d+)?[kM]?B/s", outcome.stderr)
    assert not (tmp_path / ".ingest-backfill").exists()  # no checkpoint written


def test_dry_run_of_good_lines_exits_0(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "ops.jsonl"
    source.write_text('{"a": 1}\n{"b": 2}\n')
    outcome = ingest("backfill", str(source), "--collection", "ops", "--dry-run",
                     env=clean_env(home), cwd=tmp_path)  # fmt: skip
    assert outcome.code == 0 and outcome.stderr == "", outcome
    assert json.loads(outcome.stdout)["valid"] == 2
