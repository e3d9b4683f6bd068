"""The bulk-write span (OpenTelemetry, an optional extra: `pip install
"sqs-mongo-ingest[tracing]"`; configure it the usual way, e.g. `opentelemetry-instrument
ingest run`).

Each bulk write gets a span that links to the spans the records were sent in (their
traceparent travels in the record's envelope), at most MAX_LINKS of them, the rest
counted in an attribute; it also carries the collection and how long the records
waited in SQS. Without OpenTelemetry installed, or with no tracer provider configured,
nothing is imported per bulk and nothing is paid."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any, Final

from producer import wire

MAX_LINKS: Final = 32
SPAN_NAME: Final = "ingest bulk write"


class BulkTracing:
    def __init__(self) -> None:
        self._trace: Any = None
        self._propagator: Any = None
        if importlib.util.find_spec("opentelemetry") is not None:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            self._trace, self._propagator = trace, TraceContextTextMapPropagator()

    @property
    def enabled(self) -> bool:
        """Is a real tracer provider configured? (Asked per bulk: it may be set late.)"""
        if self._trace is None:
            return False
        provider = type(self._trace.get_tracer_provider()).__name__
        return provider not in ("ProxyTracerProvider", "NoOpTracerProvider")

    @contextlib.contextmanager
    def bulk(self, records: Sequence[wire.Record], waits: Sequence[float]) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        links, dropped = self._links(records)
        collections = sorted({record.collection for record in records})
        attributes: dict[str, Any] = {
            "db.system": "mongodb",
            "db.operation.name": "bulkWrite",
            "db.collection.name": collections[0]
            if len(collections) == 1
            else ",".join(collections),
            "messaging.batch.message_count": len(records),
            "ingest.links_dropped": dropped,
        }
        if waits:
            attributes["ingest.queue_wait_seconds.max"] = max(waits)
            attributes["ingest.queue_wait_seconds.mean"] = sum(waits) / len(waits)
        tracer = self._trace.get_tracer("ingest")
        with tracer.start_as_current_span(SPAN_NAME, links=links, attributes=attributes):
            yield

    def _links(self, records: Sequence[wire.Record]) -> tuple[list[Any], int]:
        contexts: dict[str, Any] = {}
        traced = 0
        for record in records:
            if record.trace is None:
                continue
            traced += 1
            if record.trace in contexts or len(contexts) >= MAX_LINKS:
                continue
            context = self._span_context(record.trace)
            if context is not None:
                contexts[record.trace] = context
        links = [self._trace.Link(context) for context in contexts.values()]
        return links, traced - len(links)

    def _span_context(self, traceparent: str) -> Any:
        carrier = self._propagator.extract({"traceparent": traceparent})
        context = self._trace.get_current_span(carrier).get_span_context()
        return context if context.is_valid else None
