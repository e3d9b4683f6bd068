"""Trace context: a record sent inside a span carries it in its envelope (both formats),
the bulk-write span links to it (bounded), and without OpenTelemetry nothing is paid."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from bson import ObjectId
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ingest.flow.breaker import SinkBreaker
from ingest.metrics import Metrics
from ingest.pipeline.write import BatchWriter
from ingest.queues.base import Message
from ingest.sinks.memory import MemorySink
from ingest.tracing import MAX_LINKS, SPAN_NAME
from producer import wire
from producer.encode import Encoder
from producer.packing import Packer
from producer.testing import RecordingProducer

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))
trace.set_tracer_provider(_provider)  # once per process: OpenTelemetry allows no other
tracer = trace.get_tracer("tests")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _exporter.clear()
    yield _exporter


def _traceparent(span: trace.Span) -> str:
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"


@pytest.mark.parametrize("version", wire.FORMATS)
def test_a_record_sent_in_a_span_carries_its_context_not_in_the_document(version: str) -> None:
    producer = RecordingProducer(wire_format=version)
    with tracer.start_as_current_span("POST /operations") as span:
        producer.send("audit", {"_id": 1, "action": "login"})
    producer.send("audit", {"_id": 2})
    inside, outside = producer.sent
    assert inside.trace == _traceparent(span) and outside.trace is None
    assert inside.document == {"_id": 1, "action": "login"}  # nothing added to the document


@pytest.mark.parametrize("version", wire.FORMATS)
def test_the_bulk_span_links_to_the_senders_spans_bounded(
    version: str, spans: InMemorySpanExporter
) -> None:
    encoder = Encoder(version)
    items, parents = [], []
    for n in range(MAX_LINKS + 8):
        with tracer.start_as_current_span(f"request {n}") as span:
            parents.append(span.get_span_context())
            items.append(encoder.item("audit", {"_id": n}, None, _traceparent(span))[0])
    items.append(encoder.item("audit", {"_id": "untraced"})[0])
    messages = [
        Message("q", f"m{i}", f"r{i}", m.body, m.attributes, sent_at=0.0)
        for i, m in enumerate(Packer(1 << 20, version=version).pack(items))
    ]
    settlement = BatchWriter(MemorySink(), Metrics(), SinkBreaker(), clock=lambda: 12.5).process(
        messages
    )
    assert len(settlement.delete) == len(messages)
    (bulk,) = [s for s in spans.get_finished_spans() if s.name == SPAN_NAME]
    linked = {(link.context.trace_id, link.context.span_id) for link in bulk.links}
    assert len(linked) == MAX_LINKS
    assert linked <= {(c.trace_id, c.span_id) for c in parents}
    assert bulk.attributes is not None
    assert bulk.attributes["ingest.links_dropped"] == 8
    assert bulk.attributes["db.collection.name"] == "audit"
    assert bulk.attributes["ingest.queue_wait_seconds.max"] == 12.5


def test_a_malformed_trace_context_never_blocks_a_record() -> None:
    line = json.dumps({"c": "audit", "d": {"_id": ObjectId().__str__()}, "t": {"not": "text"}})
    record = wire.decode_line(line)
    assert record.trace is None and record.collection == "audit"


_WITHOUT_OTEL = """
import sys, importlib.util, json
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a)
from producer.testing import RecordingProducer
p = RecordingProducer()
p.send("audit", {"_id": 1})
from ingest.tracing import BulkTracing
print(json.dumps({"loaded": [m for m in sys.modules if m.startswith("opentelemetry")],
                  "trace": p.sent[0].trace, "enabled": BulkTracing().enabled}))
"""


def test_without_opentelemetry_nothing_is_imported() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OTEL], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {"loaded": [], "trace": None, "enabled": False}
