"""Trace context end to end on the local stack: a web app sends inside a span in its own
process; the consumer's bulk-write span links to that span (SDK in-memory exporters)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ingest.cli.connect import queue_service, queues, store
from ingest.cli.options import service_options
from ingest.pipeline.service import Service
from ingest.settings import Settings
from ingest.tracing import SPAN_NAME
from tests.support.waiting import wait_until

_WEB_APP = textwrap.dedent(
    """
    import json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from producer import Producer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    with Producer(sys.argv[1], journal_dir=sys.argv[2], wire_format=sys.argv[3]) as producer:
        with trace.get_tracer("web").start_as_current_span("POST /orders") as span:
            producer.send("orders", {"item": "book"})
    (finished,) = exporter.get_finished_spans()
    print(json.dumps({"trace_id": finished.context.trace_id, "span_id": finished.context.span_id}))
    """
)


def _exporter() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first test in this process sets it
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_write_span_links_to_the_web_requests_span(
    version: str, make_queue: Any, mongo_db: Any, mongo_uri: str, tmp_path: Path
) -> None:
    queue = make_queue()
    sent = subprocess.run(
        [sys.executable, "-c", _WEB_APP, queue.url, str(tmp_path / "journal"), version],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    parent = json.loads(sent.stdout)
    exporter = _exporter()
    settings = Settings(queue_urls=(queue.url,), mongo_uri=mongo_uri, database=mongo_db.name,
                        wait_seconds=1, metrics_port=0, max_pollers=0)  # fmt: skip
    service = Service(
        service_options(settings),
        queues(settings, queue_service(settings, for_receiving=True)),
        store(settings),
    )
    service.start()
    try:
        wait_until(lambda: mongo_db.orders.count_documents({}) >= 1, 30, 0.2)
    finally:
        service.stop(deadline_seconds=10)
    (write,) = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    (link,) = write.links
    assert (link.context.trace_id, link.context.span_id) == (parent["trace_id"], parent["span_id"])
    assert write.attributes is not None and write.attributes["db.collection.name"] == "orders"
    assert write.attributes["ingest.queue_wait_seconds.max"] >= 0
    assert "t" not in mongo_db.orders.find_one({})  # the envelope never reaches the document
