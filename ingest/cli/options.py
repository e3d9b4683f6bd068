"""The settings turned into the small typed options each part of the service takes:
the only place below the command line that reads Settings (arq's way: settings are
checked at the edge, then nothing deeper sees them)."""

from __future__ import annotations

from ingest.flow.ceiling import Ceiling
from ingest.flow.retry import RetryPolicy
from ingest.flow.scaling import ScalingPolicy
from ingest.pipeline.receive import ReceiveOptions
from ingest.pipeline.route import build_router
from ingest.pipeline.service import ServiceOptions
from ingest.pipeline.settle import SettleOptions
from ingest.settings import Settings


def service_options(settings: Settings) -> ServiceOptions:
    """Raises ConfigError for a hook that cannot be loaded."""
    s = settings
    retry = RetryPolicy(s.retry_base_seconds, s.retry_max_seconds)
    return ServiceOptions(
        receive=ReceiveOptions(s.max_messages, s.wait_seconds, s.visibility_timeout),
        settle=SettleOptions(s.on_conflict, s.max_attempts, retry),
        retry=retry,
        ceiling=_ceiling(s),
        router=build_router(s.allow_collections, s.allow_prefixes, s.hooks),
        scaling=ScalingPolicy(s.min_pollers or 1, s.max_pollers) if s.max_pollers else None,
        pollers=s.pollers,
        writers=s.writers,
        ackers=s.ackers,
        inbox_batches=s.inbox_size,
        partitioned=s.partitioned,
        max_decoded_bytes=s.max_decoded_bytes,
        keep_payloads=s.keep_payloads,
        exit_when_idle=s.exit_when_idle,
        replica_heartbeat_seconds=s.replica_heartbeat_seconds,
        shutdown_seconds=s.shutdown_seconds,
        poll_stall_seconds=s.poll_stall_seconds,
        destination=f"{s.database} (mode {s.write_mode.value})",
        tombstone_seconds=s.tombstone_seconds,
    )


def _ceiling(s: Settings) -> Ceiling | None:
    """The write ceiling, or None (the settings refuse adaptive without a cap)."""
    if s.max_write_rate <= 0:
        return None
    return Ceiling(
        s.max_write_rate, s.write_burst, s.write_rate, s.target_write_latency, s.min_write_rate
    )
