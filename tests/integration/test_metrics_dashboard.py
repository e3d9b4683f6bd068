"""A live `ingest run`: /readyz answers 200, every metric the Grafana dashboard
queries is in /metrics, and `ingest status --consumer` reads its readiness."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "ingest.json"
INGEST = str(Path(sys.executable).parent / "ingest")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "gauge": ("",), "summary": ("_sum", "_count", "")}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def dashboard_metric_names() -> set[str]:
    names = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            found = set(re.findall(r"\b(ingest_[a-z0-9_]+)\b", target["expr"]))
            assert found, f"panel {panel['title']!r} queries no ingest metric"
            names |= found
    return names


def exposed_names(text: str) -> set[str]:
    """Sample names in /metrics, and for families with no samples yet (a labelled
    counter before its first event) the names their type gives them."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def test_live_metrics_cover_the_dashboard_and_status_reads_readyz(
    make_queue: Any, mongo_db: Any
) -> None:
    queue = make_queue()
    port = _free_port()
    env = dict(os.environ, INGEST_DATABASE=mongo_db.name)
    consumer = subprocess.Popen(
        [INGEST, "run", "--queue-url", queue.url, "--metrics-port", str(port), "--wait-seconds", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert consumer.poll() is None, consumer.communicate()[1][-2000:]
            try:
                status, body = _get(f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "consumer never became ready"
            time.sleep(0.2)
        assert json.loads(body)["ready"] is True

        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        missing = dashboard_metric_names() - exposed_names(metrics.decode())
        assert not missing, f"the dashboard queries metrics the service does not export: {missing}"

        shown = subprocess.run(
            [INGEST, "status", "--queue-url", queue.url, "--json", "--consumer", f"127.0.0.1:{port}"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        report = json.loads(shown.stdout)
        (health,) = report["consumers"].values()
        assert health["status"] == 200 and health["ready"] is True
        assert report["queues"][queue.url]["dead_letter"]["url"] == queue.dead_letter_url
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=60)
    assert consumer.returncode == 0
    down = subprocess.run(
        [INGEST, "status", "--queue-url", queue.url, "--json", "--consumer", f"127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (health,) = json.loads(down.stdout)["consumers"].values()
    assert health["ready"] is False and health["status"] is None and health["error"]
