"""Counters exported to Prometheus, and what importing the producer costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from producer import Producer
from producer.metrics import register_prometheus
from tests.support.producer_fakes import FakeSQS, fail_entries

URL = "http://sqs.local/000000000000/q"


def test_register_prometheus_exports_the_counters(tmp_path: Path) -> None:
    fake = FakeSQS(fail_entries(1))
    registry = CollectorRegistry()
    with Producer(URL, sqs_client=fake, journal_dir=tmp_path, retry_initial_seconds=0.001) as p:
        register_prometheus(p, registry)
        for n in range(3):
            p.send("events", {"n": n})
        assert p.flush(5)
        assert registry.get_sample_value("sqs_producer_records_accepted_total") == 3
        assert registry.get_sample_value("sqs_producer_records_sent_total") == 3
        assert registry.get_sample_value("sqs_producer_records_retried_total") == 3
        assert registry.get_sample_value("sqs_producer_records_buffered") == 0
        assert b"sqs_producer_records_journaled_total 0.0" in generate_latest(registry)


def test_importing_the_producer_loads_nothing_heavy() -> None:
    code = (
        "import sys, producer\n"
        "heavy = [m for m in ('boto3', 'botocore', 'prometheus_client', 'ingest', 'tenacity', 'asyncio')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == ""
