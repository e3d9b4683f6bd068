"""Trace context for records (OpenTelemetry, an optional extra: `pip install
"sqs-mongo-ingest[tracing]"`).

When send() runs inside an active span, the record carries that span's context, as a
W3C traceparent, in its envelope (never in the document); the consumer's bulk-write
span links to it. Without OpenTelemetry installed nothing is imported and send() pays
nothing: the producer asks once, at construction, whether the package is there."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable


def traceparent_source() -> Callable[[], str | None] | None:
    """A function giving the active span's traceparent (None outside a span), or None
    when OpenTelemetry is not installed."""
    if importlib.util.find_spec("opentelemetry") is None:
        return None
    from opentelemetry import trace

    def current() -> str | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"

    return current
