"""Logging setup: text for people, JSON lines for log pipelines. Never logs credentials."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
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


class Throttled:
    """A warning at most every `interval` seconds; the next line says how many were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._held = 0

    def warning(self, message: str) -> None:
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self._interval:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        more = f" ({held} more like it in the last {self._interval:.0f}s)" if held else ""
        self._logger.warning("%s%s", message, more)


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
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str, str], float] = {}
        self._held: dict[tuple[str, str, str], int] = {}

    def report(self, where: str, exc: BaseException, what: str) -> None:
        key = (where, type(exc).__name__, _raised_at(exc))
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return
            if len(self._last) > 1000:  # bounded: a flood of distinct failures
                self._last.clear()
                self._held.clear()
            self._last[key] = now
            held = self._held.pop(key, 0)
        more = f" ({held} more like it in the last {self._interval:.0f}s)" if held else ""
        self._logger.error("%s%s", what, more, exc_info=exc)


def _raised_at(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
