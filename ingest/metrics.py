"""Prometheus metrics of one consumer process, on a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# Waiting in SQS: seconds to the days a backlog may last (SQS keeps messages up to 14 days).
_WAIT_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                 3600.0, 7200.0, 21600.0, 86400.0, 345600.0)  # fmt: skip


@dataclass
class Metrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.messages_received = Counter(
            "ingest_messages_received", "SQS messages received", registry=r
        )
        self.messages_deleted = Counter(
            "ingest_messages_deleted",
            "SQS messages deleted after their records were durable",
            registry=r,
        )
        self.delete_failures = Counter(
            "ingest_delete_failures", "Delete entries SQS reported as failed", registry=r
        )
        self.duplicate_deliveries = Counter(
            "ingest_duplicate_deliveries",
            "Messages received again while still in flight",
            registry=r,
        )
        self.records_received = Counter(
            "ingest_records_received", "Records decoded from messages", registry=r
        )
        self.records_written = Counter(
            "ingest_records_written", "Records written to MongoDB", registry=r
        )
        self.records_duplicate = Counter(
            "ingest_records_duplicate",
            "Records whose _id was already written (duplicates collapsed)",
            registry=r,
        )
        self.records_stale = Counter(
            "ingest_records_stale",
            "Records not written: a higher version of their _id is stored, or its tombstone",
            registry=r,
        )
        self.tombstones_expired = Counter(
            "ingest_tombstones_expired",
            "Deletes' tombstones this consumer deleted after their period (no TTL index)",
            registry=r,
        )
        self.tombstone_sweep_seconds = Histogram(
            "ingest_tombstone_sweep_seconds",
            "How long a sweep of expired tombstones took",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.records_conflicting = Counter(
            "ingest_records_conflicting",
            "Insert-once duplicates whose content differs from the stored document",
            ["collection"],
            registry=r,
        )
        self.records_dead_lettered = Counter(
            "ingest_records_dead_lettered",
            "Records or messages sent to the dead-letter queue",
            ["reason"],
            registry=r,
        )
        self.records_retried = Counter(
            "ingest_records_retried", "Records left for a later retry", registry=r
        )
        self.messages_released = Counter(
            "ingest_messages_released", "Messages made visible again without processing", registry=r
        )
        self.messages_requeued = Counter(
            "ingest_messages_requeued",
            "Messages sent again as new ones (records to try again, with their attempts;"
            " or at their last receive, not their fault)",
            registry=r,
        )
        self.internal_errors = Counter(
            "ingest_internal_errors",
            "Unexpected exceptions, contained to the message or record that raised them",
            ["stage"],
            registry=r,
        )
        for stage in ("decode", "write", "acknowledge", "receive"):
            self.internal_errors.labels(stage)
        self.visibility_extended = Counter(
            "ingest_visibility_extended", "Visibility extensions by the heartbeat", registry=r
        )
        self.receive_errors = Counter(
            "ingest_receive_errors", "Failed ReceiveMessage calls", registry=r
        )
        self.sink_failures = Counter(
            "ingest_sink_failures",
            "Bulk writes that failed as a whole (sink unavailable)",
            registry=r,
        )
        # Payloads kept in S3 (messages whose body is a pointer to them).
        self.payload_failures = Counter(
            "ingest_payload_failures",
            "Payload fetches S3 did not answer (the message was handed back)",
            registry=r,
        )
        self.payloads_deleted = Counter(
            "ingest_payloads_deleted",
            "Payload objects deleted after their message was deleted",
            registry=r,
        )
        self.payloads_left = Counter(
            "ingest_payloads_left",
            "Payload objects that could not be deleted after their message was",
            registry=r,
        )
        self.batch_records = Histogram(
            "ingest_batch_records", "Records per bulk write", buckets=_SIZE_BUCKETS, registry=r
        )
        self.write_seconds = Histogram(
            "ingest_bulk_write_seconds", "Bulk write latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "ingest_end_to_end_seconds",
            "From the record's _id time to its write",
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.end_to_end_skewed = Counter(
            "ingest_end_to_end_skewed_samples",
            "End-to-end samples left out: the record's _id time is in the future or implausibly old",
            ["direction"],
            registry=r,
        )
        for direction in ("future", "old"):
            self.end_to_end_skewed.labels(direction)  # both series exist from the start
        self.queue_wait_seconds = Histogram(
            "ingest_queue_wait_seconds",
            "From SQS's SentTimestamp to this receive (SQS's clock against ours)",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.queue_visible = Gauge(
            "ingest_queue_visible_messages", "Approximate visible messages", ["queue"], registry=r
        )
        self.queue_in_flight = Gauge(
            "ingest_queue_in_flight_messages",
            "Approximate in-flight messages",
            ["queue"],
            registry=r,
        )
        self.dead_letter_depth = Gauge(
            "ingest_dead_letter_messages",
            "Approximate messages in the dead-letter queue",
            ["queue"],
            registry=r,
        )
        self.in_flight = Gauge(
            "ingest_in_flight_messages", "Messages this process holds", registry=r
        )
        self.breaker_open = Gauge(
            "ingest_sink_breaker_open", "1 while MongoDB is considered down", registry=r
        )
        self.pollers_running = Gauge(
            "ingest_pollers_running", "Pollers currently receiving", registry=r
        )
        # The write ceiling (ingest/ratelimit.py).
        self.write_ceiling = Gauge(
            "ingest_write_ceiling_records_per_second",
            "This replica's current write ceiling (its share of the pool's)",
            registry=r,
        )
        self.write_tokens_granted = Counter(
            "ingest_write_tokens_granted", "Records the write ceiling let through", registry=r
        )
        self.write_gate_wait_seconds = Histogram(
            "ingest_write_gate_wait_seconds",
            "Seconds a bulk write waited for the write ceiling",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.live_replicas = Gauge(
            "ingest_live_replicas", "Consumer replicas sharing the write ceiling", registry=r
        )
