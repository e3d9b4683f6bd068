"""/metrics for Prometheus, /healthz (alive) and /readyz (ready), answered from the
state the service keeps, never by calling SQS or MongoDB: a probe answers in
milliseconds whatever the servers do (Kubernetes' default probe timeout is 1 s)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ingest.errors import ConfigError


@dataclass(frozen=True)
class Health:
    alive: bool
    ready: bool
    checks: dict[str, str] = field(default_factory=dict)  # component -> "ok" or why not
    reason: str = ""  # why it is not alive

    def liveness(self) -> dict[str, object]:
        return {"alive": self.alive, **({"reason": self.reason} if self.reason else {})}

    def readiness(self) -> dict[str, object]:
        return {"ready": self.ready, "checks": self.checks}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A probe that gave up before the answer (its timeout, a restart) is no error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class HealthServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: Callable[[], Health]
    ) -> None:
        self._registry = registry
        self._health = health
        try:
            self._server = _Server((host, port), self._handler())
        except OSError as exc:  # in use, not an address of this host, no permission
            raise ConfigError(
                f"--metrics-host {host} --metrics-port {port}: {exc.strerror or exc}"
            ) from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(outer._registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    health = outer._health()
                    self._json(200 if health.alive else 503, health.liveness())
                elif self.path == "/readyz":
                    health = outer._health()
                    self._json(200 if health.ready else 503, health.readiness())
                else:
                    self._json(404, {"error": "not found"})

            def _json(self, status: int, body: object) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would flood the log

        return Handler
