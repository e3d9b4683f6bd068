"""Frozen settings. The only module that reads INGEST_* variables; the CLI's flags override them.

SQS endpoint, region and credentials are not ours to read: boto3's own chain
does that (AWS_ENDPOINT_URL_SQS, AWS_DEFAULT_REGION, profiles, IAM roles)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import ConfigError
from ingest.sink import WriteMode

PREFIX = "INGEST_"


@dataclass(frozen=True)
class Settings:
    queue_urls: tuple[str, ...] = ()
    mongo_uri: str = "mongodb://127.0.0.1:27017/"
    database: str = "ingest"
    dead_letter_url: str | None = None  # found through the queue's RedrivePolicy when unset
    region: str | None = (
        None  # only when AWS_DEFAULT_REGION cannot be used (boto3 ignores AWS_REGION)
    )
    pollers: int = 2  # per queue
    writers: int = 4
    ackers: int = 2
    max_messages: int = 10
    wait_seconds: int = 20
    visibility_timeout: int = 30
    write_mode: WriteMode = WriteMode.INSERT_ONCE
    write_concern: str | None = None  # "majority", "1", "0"; None: the URI's / server's default
    journal: bool | None = None
    inbox_batches: int = 0  # 0: twice the writers
    shutdown_seconds: float = 30.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    max_decoded_bytes: int = 32 * 1024 * 1024
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108  # 0: no HTTP server
    exit_when_idle: float | None = None  # stop after this many seconds with nothing to do
    log_format: str = "text"
    log_level: str = "INFO"
    # The write ceiling (ingest/ratelimit.py), records per second for the whole pool of replicas.
    max_write_rate: float = 0.0  # 0: no ceiling; the cap in adaptive mode
    write_burst: float = 0.0  # records; 0: 1/20 of a second's worth
    write_rate: str = "fixed"  # "fixed" or "adaptive"
    target_write_latency: float = 0.05  # seconds per bulk write, adaptive mode; "50ms" accepted
    min_write_rate: float = 0.0  # adaptive floor; 0: 1/50 of max_write_rate
    replica_heartbeat_seconds: float = 5.0
    # Routing (ingest/route.py): comma-separated names and prefixes; empty allows all.
    allow_collections: tuple[str, ...] = ()
    allow_prefixes: tuple[str, ...] = ()
    hooks: str = ""  # "events=pkg.module:function,audit=..."
    # Standard queues: keep one partition key on one writer, in arrival order.
    partitioned: bool = False
    # Scaling by depth: pollers per queue move between these bounds (max 0: fixed at `pollers`).
    min_pollers: int = 1
    max_pollers: int = 4
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.writers < 1 or self.pollers < 1 or self.ackers < 1:
            raise ConfigError("pollers, writers and ackers must be at least 1")
        if not 1 <= self.max_messages <= 10:
            raise ConfigError("max_messages must be between 1 and 10 (an SQS limit)")
        if not 0 <= self.wait_seconds <= 20:
            raise ConfigError("wait_seconds must be between 0 and 20 (an SQS limit)")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be 'text' or 'json'")

    @property
    def inbox_size(self) -> int:
        return self.inbox_batches or 2 * self.writers

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then INGEST_* variables, then explicit overrides (the CLI's flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            if item.name == "extra":
                continue
            name = PREFIX + item.name.upper()
            if item.name == "queue_urls":
                name = PREFIX + "QUEUE_URL"
            if name in env and env[name] != "":
                values[item.name] = _parse(item.name, env[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("queue_urls", "allow_collections", "allow_prefixes"):
            if isinstance(values.get(name), str):
                values[name] = _parse(name, values[name])
        latency = values.get("target_write_latency")
        if isinstance(latency, str):
            values["target_write_latency"] = _parse("target_write_latency", latency)
        if "write_mode" in values:
            values["write_mode"] = _write_mode(values["write_mode"])
        return cls(**values)


_INTS = {"pollers", "writers", "ackers", "max_messages", "wait_seconds", "visibility_timeout",
         "inbox_batches", "max_decoded_bytes", "metrics_port",
         "min_pollers", "max_pollers"}  # fmt: skip
_FLOATS = {"shutdown_seconds", "retry_base_seconds", "retry_max_seconds", "exit_when_idle",
           "max_write_rate", "write_burst", "min_write_rate", "replica_heartbeat_seconds"}  # fmt: skip


def _parse(name: str, raw: str) -> Any:
    try:
        if name == "queue_urls":
            return tuple(url.strip() for url in raw.split(",") if url.strip())
        if name in _INTS:
            return int(raw)
        if name in _FLOATS:
            return float(raw)
        if name in ("journal", "partitioned"):
            return raw.lower() in ("1", "true", "yes")
        if name in ("allow_collections", "allow_prefixes"):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        if name == "write_mode":
            return _write_mode(raw)
        if name == "target_write_latency":
            return parse_seconds(raw)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return raw


def _write_mode(raw: str | WriteMode) -> WriteMode:
    try:
        return WriteMode(raw)
    except ValueError as exc:
        choices = ", ".join(m.value for m in WriteMode)
        raise ConfigError(f"write mode {raw!r} is not one of {choices}") from exc


def parse_seconds(raw: str) -> float:
    """'50ms', '0.05s' or '0.05' (seconds)."""
    text = raw.strip().lower()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.removesuffix("s"))
