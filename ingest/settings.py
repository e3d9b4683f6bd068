"""Frozen settings, typed and checked at the edge. The only module that reads INGEST_*
variables; the CLI's flags override them.

Each value is converted by its field's type (numbers, true/false, choices, lists,
durations such as "50ms") and checked against its range where it comes in, and a
mistake names what the user typed: the flag or the variable. SQS endpoint, region and
credentials are not ours to read: boto3's own chain does that (AWS_ENDPOINT_URL_SQS,
AWS_DEFAULT_REGION, profiles, IAM roles)."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ingest.errors import ConfigError
from ingest.flow.ceiling import RateMode
from ingest.sinks.base import ConflictPolicy, WriteMode
from producer import wire

PREFIX: Final = "INGEST_"

# One receive waits for SQS's answer for the long poll plus this slack (never more than
# the visibility timeout), and is tried this many times; see Settings.poll_stall_seconds.
RECEIVE_SLACK_SECONDS: Final = 10
RECEIVE_ATTEMPTS: Final = 3
STALL_MARGIN_SECONDS: Final = 5.0


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def parse_seconds(raw: str) -> float:
    """'50ms', '0.05s' or '0.05' (seconds)."""
    text = raw.strip().lower()
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        return float(text.removesuffix("s"))
    except ValueError:
        raise ValueError(f"{raw!r} is not a duration (e.g. 50ms, 0.5s or 2)") from None


def parse_hooks(raw: str) -> dict[str, str]:
    """``events=pkg.mod:fn,audit=pkg.mod:other`` -> {collection: import path}."""
    hooks: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        collection, sep, path = item.partition("=")
        if not sep or not collection.strip() or ":" not in path:
            raise ValueError(f"{item!r} must look like collection=package.module:function")
        hooks[collection.strip()] = path.strip()
    return hooks


def _meta(
    low: float | None = None,
    high: float | None = None,
    *,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
    variable: str | None = None,
    flag: str | None = None,
) -> dict[str, Any]:
    return {
        "low": low,
        "high": high,
        "parse": parse,
        "check": check,
        "variable": variable,
        "flag": flag,
    }


def _mongo_uri(value: str) -> str | None:
    if not value.startswith(("mongodb://", "mongodb+srv://")):
        return "must be a MongoDB URI (mongodb://host:port/ or mongodb+srv://host/)"
    return None


def _queue_urls(value: tuple[str, ...]) -> str | None:
    # memory://: ingest.queues.memory's, for code that builds a Service on it
    bad = [u for u in value if not (wire.is_queue_url(u) or u.startswith("memory://"))]
    return f"{bad[0]!r} is not a queue URL ({wire.QUEUE_URL_FORM})" if bad else None


def _field_name(value: str, *, dotted: bool) -> str | None:
    if not value or value.startswith("$") or "\x00" in value or value == "_id":
        return f"{value!r} cannot be used: name a field other than _id, without a leading $"
    if not dotted and "." in value:
        return f"{value!r} must be a top-level field (no '.')"
    return None


def _database(value: str) -> str | None:
    try:
        wire.check_database_name(value)
    except wire.WireError as exc:
        return str(exc)
    return None


def _version_field(value: str) -> str | None:
    return _field_name(value, dotted=False)


def _expire_field(value: str) -> str | None:
    return _field_name(value, dotted=True)


def _bucket(value: str) -> str | None:
    return wire.bucket_name_problem(value)


def _host(value: str) -> str | None:
    if re.fullmatch(r"[\d.]+", value):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return f"{value!r} is not an IPv4 address"
    elif not re.fullmatch(r"[A-Za-z0-9.:\-]+", value):
        return f"{value!r} is not a host name or address"
    return None


@dataclass(frozen=True)
class Settings:
    queue_urls: tuple[str, ...] = field(
        default=(),
        metadata=_meta(check=_queue_urls, variable="INGEST_QUEUE_URL", flag="--queue-url"),
    )
    mongo_uri: str = field(default="mongodb://127.0.0.1:27017/", metadata=_meta(check=_mongo_uri))
    database: str = field(default="ingest", metadata=_meta(check=_database))
    dead_letter_url: str | None = None  # found through the queue's RedrivePolicy when unset
    region: str | None = (
        None  # only when AWS_DEFAULT_REGION cannot be used (boto3 ignores AWS_REGION)
    )
    pollers: int = field(default=2, metadata=_meta(1, 64))  # per queue
    writers: int = field(default=4, metadata=_meta(1, 256))
    ackers: int = field(default=2, metadata=_meta(1, 64))
    max_messages: int = field(default=10, metadata=_meta(1, 10))  # an SQS limit
    wait_seconds: int = field(default=20, metadata=_meta(0, 20))  # an SQS limit
    visibility_timeout: int = field(default=30, metadata=_meta(1, 43200))  # SQS: 0-12 h
    write_mode: WriteMode = WriteMode.INSERT_ONCE
    # Replace and merge write a record only over a lower version in this field.
    version_field: str | None = field(default=None, metadata=_meta(check=_version_field))
    # Insert-once: a duplicate _id with other content (ingest/sinks/mongo_guards.py).
    on_conflict: ConflictPolicy = ConflictPolicy.COUNT
    # Updates and deletes (ingest/sinks/operations.py): the operation ids a document keeps
    # to apply each unordered update once, and how long a delete's tombstone lives.
    recent_operations: int = field(default=1000, metadata=_meta(1, 100_000))
    tombstone_seconds: float = field(default=14 * 86400.0, metadata=_meta(1, 10 * 365 * 86400))
    # `ingest init`: a TTL index on the named collections (ingest/tools/provision.py).
    expire_after_days: int | None = field(
        default=None,
        metadata=_meta(1, 24855, flag="--expire-after"),  # MongoDB's limit: 2**31-1 seconds
    )
    expire_field: str | None = field(default=None, metadata=_meta(check=_expire_field))
    write_concern: str | None = None  # "majority", "1", "0"; None: the URI's / server's default
    journal: bool | None = None
    inbox_batches: int = field(default=0, metadata=_meta(0, 10_000))  # 0: twice the writers
    shutdown_seconds: float = field(default=30.0, metadata=_meta(0, 3600))
    retry_base_seconds: float = field(default=2.0, metadata=_meta(0, 43200))
    retry_max_seconds: float = field(default=300.0, metadata=_meta(0, 43200))
    # Failed attempts before a record is dead-lettered with its last failure (0: the
    # queue's maxReceiveCount). Outages and shutdowns are not attempts.
    max_attempts: int = field(default=0, metadata=_meta(0, 1000))
    max_decoded_bytes: int = field(default=32 * 1024 * 1024, metadata=_meta(1024, 1 << 31))
    # Payloads kept in S3 (messages whose body is a pointer): with a bucket, pointers to
    # other buckets are refused; `ingest init --payload-bucket` creates it. A payload is
    # deleted after its message, unless kept for the bucket's own lifecycle rule.
    payload_bucket: str | None = field(default=None, metadata=_meta(check=_bucket))
    keep_payloads: bool = False
    metrics_host: str = field(default="127.0.0.1", metadata=_meta(check=_host))
    metrics_port: int = field(default=9108, metadata=_meta(0, 65535))  # 0: no HTTP server
    exit_when_idle: float | None = field(default=None, metadata=_meta(0, 86400))
    log_format: LogFormat = LogFormat.TEXT
    log_level: LogLevel = LogLevel.INFO
    # The write ceiling (ingest/flow/ceiling.py), records per second for the whole pool.
    max_write_rate: float = field(default=0.0, metadata=_meta(0, 1e9))  # 0: none; adaptive: the cap
    write_burst: float = field(
        default=0.0, metadata=_meta(0, 1e9)
    )  # records; 0: 2% of a second's worth
    write_rate: RateMode = RateMode.FIXED
    target_write_latency: float = field(  # seconds per bulk write, adaptive mode
        default=0.05, metadata=_meta(0.001, 60, parse=parse_seconds)
    )
    min_write_rate: float = field(default=0.0, metadata=_meta(0, 1e9))  # adaptive floor; 0: cap/50
    replica_heartbeat_seconds: float = field(default=5.0, metadata=_meta(0.1, 3600))
    # Routing (ingest/pipeline/route.py): names and prefixes; empty allows all.
    allow_collections: tuple[str, ...] = ()
    allow_prefixes: tuple[str, ...] = ()
    hooks: Mapping[str, str] = field(default_factory=dict, metadata=_meta(parse=parse_hooks))
    # Standard queues: keep one partition key on one writer, in arrival order.
    partitioned: bool = False
    # Scaling by depth: pollers per queue move between these bounds (max 0: fixed at `pollers`).
    min_pollers: int = field(default=1, metadata=_meta(1, 64))
    max_pollers: int = field(default=4, metadata=_meta(0, 64))

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            problem = _out_of_range(item, getattr(self, item.name))
            if problem:
                raise ConfigError(f"{item.name}: {problem}")
        problem = self._contradiction()
        if problem:
            raise ConfigError(problem)

    def _contradiction(self) -> str | None:
        if self.max_pollers and self.min_pollers > self.max_pollers:
            return f"--min-pollers {self.min_pollers} is above --max-pollers {self.max_pollers}"
        if self.max_write_rate and self.min_write_rate > self.max_write_rate:
            low, high = _number(self.min_write_rate), _number(self.max_write_rate)
            return f"--min-write-rate {low} is above --max-write-rate {high}"
        if self.write_rate is RateMode.ADAPTIVE and not self.max_write_rate:
            return "--write-rate adaptive needs --max-write-rate as its cap"
        if self.retry_base_seconds > self.retry_max_seconds:
            return "INGEST_RETRY_BASE_SECONDS is above INGEST_RETRY_MAX_SECONDS"
        if self.version_field and self.write_mode is WriteMode.INSERT_ONCE:
            return (
                "--version-field needs --write-mode replace or merge (insert-once never overwrites)"
            )
        if (self.expire_after_days is None) != (self.expire_field is None):
            return "--expire-after DAYS and --expire-field FIELD go together"
        return None

    @property
    def inbox_size(self) -> int:
        return self.inbox_batches or 2 * self.writers

    @property
    def receive_timeout(self) -> int:
        """How long one receive waits for SQS's answer: the long poll, plus slack for the
        network, the slack no longer than the visibility timeout (an answer that late
        would bring messages SQS has already made visible to other consumers again)."""
        return self.wait_seconds + min(RECEIVE_SLACK_SECONDS, self.visibility_timeout)

    @property
    def poll_stall_seconds(self) -> float:
        """Liveness: a poller that is not deliberately paused (breaker open, ceiling,
        full inbox, retry backoff) and whose loop has not gone round for this long is
        stuck: every attempt of one receive would have run out by then."""
        return RECEIVE_ATTEMPTS * self.receive_timeout + STALL_MARGIN_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Defaults, then INGEST_* variables, then the CLI's flags (None: not given).
        Raises ConfigError naming the variable or flag that is wrong."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            variable = item.metadata.get("variable") or PREFIX + item.name.upper()
            raw, source = env.get(variable), variable
            if flags.get(item.name) is not None:
                raw, source = flags[item.name], flag_name(item)
            if raw is None or raw == "":
                continue
            value = _convert(item, hints[item.name], raw, source)
            problem = _out_of_range(item, value)
            if problem:
                raise ConfigError(f"{source}={_shown(raw)}: {problem}")
            values[item.name] = value
        unknown = set(flags) - {item.name for item in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)


def flag_name(item: dataclasses.Field[Any]) -> str:
    return str(item.metadata.get("flag") or "--" + item.name.replace("_", "-"))


def _convert(item: dataclasses.Field[Any], kind: Any, raw: Any, source: str) -> Any:
    """`raw` (text from the environment, or a flag's value) as the field's type."""
    parse = item.metadata.get("parse")
    kind = _without_none(kind)
    try:
        if not isinstance(raw, str):
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                return kind(raw)
            if typing.get_origin(kind) is tuple and isinstance(raw, (list, tuple)):
                return tuple(raw)
            return raw  # click already typed it
        if parse is not None:
            return parse(raw)
        return _from_text(kind, raw)
    except ValueError as exc:
        raise ConfigError(f"{source}={raw}: {exc}") from None


def _from_text(kind: Any, raw: str) -> Any:
    if kind is bool:
        folded = raw.strip().lower()
        if folded in ("1", "true", "yes", "on"):
            return True
        if folded in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        choices = [m.value for m in kind]
        folded = raw.strip()
        for member in kind:
            if member.value.lower() == folded.lower():
                return member
        raise ValueError(f"must be one of {', '.join(choices)}")
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _without_none(kind: Any) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        rest = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return rest[0] if len(rest) == 1 else kind
    return kind


def _out_of_range(item: dataclasses.Field[Any], value: Any) -> str | None:
    if value is None:
        return None
    check = item.metadata.get("check")
    if check is not None and (problem := check(value)):
        return str(problem)
    low, high = item.metadata.get("low"), item.metadata.get("high")
    if isinstance(value, bool) or not isinstance(value, int | float) or low is None or high is None:
        return None
    if not low <= value <= high:
        return f"must be between {_number(low)} and {_number(high)}"
    return None


def _shown(raw: Any) -> str:
    """A value as the user typed it: click turns `--max-write-rate -5` into -5.0."""
    return _number(raw) if isinstance(raw, float) else str(raw)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
