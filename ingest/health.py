"""/metrics for Prometheus, /healthz (alive) and /readyz (SQS and MongoDB answer)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], dict[str, str]]  # component -> "ok" or the reason it is not


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        alive: Callable[[], bool],
        ready: Check,
        cache_seconds: float = 1.0,
    ) -> None:
        self._registry = registry
        self._alive = alive
        self._ready = ready
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, str]] = (0.0, {})
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def readiness(self) -> dict[str, str]:
        # Cached: an orchestrator probing often must not hammer SQS and MongoDB.
        at, result = self._cached
        if time.monotonic() - at > self._cache_seconds:
            result = self._ready()
            self._cached = (time.monotonic(), result)
        return result

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(outer._registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = outer._alive()
                    self._json(200 if ok else 503, {"alive": ok})
                elif self.path == "/readyz":
                    checks = outer.readiness()
                    ready = all(v == "ok" for v in checks.values())
                    self._json(200 if ready else 503, {"ready": ready, "checks": checks})
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
