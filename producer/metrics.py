"""Record counters, readable as Producer.stats() and exportable to Prometheus.

prometheus_client is imported only by register_prometheus, so an app that
does not export metrics does not pay for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Stats:
    """Records, not messages. accepted = sent + journaled + failed + buffered,
    up to records a crash or close timeout journaled twice (see docs)."""

    accepted: int = 0  # send() calls that returned an _id
    sent: int = 0  # records SQS acknowledged (live or replayed)
    retried: int = 0  # record re-send attempts after a retryable failure
    journaled: int = 0  # records written to the journal
    replayed: int = 0  # journaled records later sent to SQS
    failed: int = 0  # records SQS rejected as the sender's fault, or lost to a journal error
    buffered: int = 0  # records in memory, not yet sent or journaled

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Counters:
    """Counters the sender thread and the callers update. accepted is counted
    by the buffer under its own lock, to keep send() to one lock."""

    _FIELDS = ("sent", "retried", "journaled", "replayed", "failed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self._FIELDS, 0)

    def add(self, name: str, count: int) -> None:
        if count:
            with self._lock:
                self._values[name] += count

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class HasStats(Protocol):
    def stats(self) -> Stats: ...


def register_prometheus(producer: HasStats, registry: Any = None) -> Any:
    """Export producer.stats() as Prometheus counters (sqs_producer_records_*_total)
    and a gauge of buffered records. Returns the registered collector."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Collector:
        def collect(self) -> Iterator[Any]:
            stats = producer.stats().as_dict()
            buffered = stats.pop("buffered")
            for name, value in stats.items():
                family = CounterMetricFamily(
                    f"sqs_producer_records_{name}", f"Records {name} by the SQS producer"
                )
                family.add_metric([], value)
                yield family
            gauge = GaugeMetricFamily(
                "sqs_producer_records_buffered", "Records in memory, not yet sent or journaled"
            )
            gauge.add_metric([], buffered)
            yield gauge

    collector = _Collector()
    (REGISTRY if registry is None else registry).register(collector)
    return collector
