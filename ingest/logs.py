"""Logging setup: text for people, JSON lines for log pipelines. Never logs credentials."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime

_SECRETS = [
    (re.compile(r"(?<=://)([^:/@\s]+):([^@/\s]+)@"), r"\1:***@"),  # user:password@ in URIs
    (re.compile(r"(?i)(aws_secret_access_key|secret|password|token)(\W{1,3})\S+"), r"\1\2***"),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "***"),  # AWS access key ids
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """Text lines; the filter only sees the message, so tracebacks are redacted here."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Hand-written: ten lines beat another dependency."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry)


def configure(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "urllib3", "apscheduler", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Pace:
    """At most one line per key every `interval` seconds, counting the ones held back."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def due(self, key: Hashable) -> int | None:
        """None when the line must be held back; else how many were held back before it."""
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            if len(self._last) > 1000:  # bounded: a flood of distinct keys
                self._last.clear()
                self._held.clear()
            self._last[key] = now
            return self._held.pop(key, 0)

    def more(self, held: int) -> str:
        return f" ({held} more like it in the last {self.interval:.0f}s)" if held else ""


class Throttled:
    """A warning at most every `interval` seconds; the next line says how many were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._pace = _Pace(interval, clock)

    def warning(self, message: str) -> None:
        held = self._pace.due(None)
        if held is not None:
            self._logger.warning("%s%s", message, self._pace.more(held))


class Tracebacks:
    """At most one traceback per distinct failure (where, the exception's type, the line
    that raised it) every `interval` seconds; the next one says how many were held back.
    An error nobody foresaw must be seen, not fill the disk when it repeats."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._pace = _Pace(interval, clock)

    def report(self, where: str, exc: BaseException, what: str) -> None:
        held = self._pace.due((where, type(exc).__name__, _raised_at(exc)))
        if held is not None:
            self._logger.error("%s%s", what, self._pace.more(held), exc_info=exc)


def _raised_at(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
