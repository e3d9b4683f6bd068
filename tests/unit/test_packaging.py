"""What each install gets: the default (a web app's) is the producer's needs only,
the `service` extra adds the consumer's; the `ingest` script without that extra
says which extra to install in one line and exits 2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement  # pytest's own dependency

from ingest import _entry

ROOT = Path(__file__).resolve().parents[2]
PRODUCER_NEEDS = {"boto3", "pymongo", "tenacity", "zstandard"}  # zstd: the default format
SERVICE_NEEDS = {"apscheduler", "click", "prometheus-client", "tqdm"}
SERVICE_IMPORTS = {"apscheduler", "click", "prometheus_client", "tqdm"}


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


def test_default_install_is_the_producers_needs_only(project: dict[str, Any]) -> None:
    assert _names(project["dependencies"]) == PRODUCER_NEEDS
    extras = project["optional-dependencies"].values()
    everything = [*project["dependencies"], *(r for extra in extras for r in extra)]
    assert "bson" not in _names(everything), "the PyPI `bson` shadows pymongo's bson module"


def test_service_extra_holds_the_consumers_needs(project: dict[str, Any]) -> None:
    extras = project["optional-dependencies"]
    assert _names(extras["service"]) == SERVICE_NEEDS
    assert any(r.startswith("apscheduler>=3.10,<4") for r in extras["service"])
    # The tests need the service: `dev` pulls it in, and the Makefile installs it.
    assert "sqs-mongo-ingest[service]" in extras["dev"]
    assert '".[service,dev,bench]"' in (ROOT / "Makefile").read_text()
    assert 'pip install ".[service,zstd]"' in (ROOT / "docker" / "Dockerfile").read_text()
    # The entry point checks exactly the extra's modules.
    assert set(_entry.SERVICE_MODULES) == SERVICE_IMPORTS
    assert project["scripts"]["ingest"] == "ingest._entry:main"


def test_ingest_without_the_service_extra_names_it_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "apscheduler" else real(name, *a),
    )
    called: list[bool] = []
    monkeypatch.setattr("ingest.cli.main", lambda: called.append(True))
    with pytest.raises(SystemExit) as exit_info:
        _entry.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "apscheduler" in err and 'pip install "sqs-mongo-ingest[service]"' in err
    assert not called, "the CLI ran without its dependencies"


def test_ingest_with_the_service_extra_runs_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[bool] = []
    monkeypatch.setattr("ingest.cli.main", lambda: called.append(True))
    _entry.main()
    assert called == [True]


def test_console_script_without_click_in_a_fresh_process() -> None:
    """The real entry point in a process where click cannot be imported (a
    `sys.modules` entry of None makes both find_spec and import fail)."""
    code = (
        "import sys; sys.modules['click'] = None; sys.argv = ['ingest', 'run'];"
        "from ingest._entry import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert "click" in done.stderr and "sqs-mongo-ingest[service]" in done.stderr
    console = Path(sys.executable).parent / "ingest"
    ok = subprocess.run([str(console), "--version"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "0.1.0" in ok.stdout


def test_a_web_app_sending_records_imports_none_of_the_service_modules() -> None:
    code = """
import json, sys, tempfile
from producer import Producer
from tests.support.producer_fakes import FakeSQS

fake = FakeSQS()
with tempfile.TemporaryDirectory() as journal:
    with Producer("https://sqs.test/1/q", sqs_client=fake, journal_dir=journal) as producer:
        for n in range(50):
            producer.send("events", {"n": n})
        producer.flush()
print(json.dumps({
    "sent": len(fake.records()),
    "service_modules": sorted(m for m in sys.argv[1:] if m in sys.modules),
    "tenacity": "tenacity" in sys.modules,
}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, *sorted(SERVICE_IMPORTS)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["sent"] == 50
    assert report["service_modules"] == []
    assert report["tenacity"], "the sender's retries (tenacity) never loaded: nothing was sent?"
