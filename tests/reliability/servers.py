"""Private servers a fault test may stop on purpose (never the shared stack)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from tests.reliability.harness import wait_until

REPO = Path(__file__).resolve().parents[2]
FERRETDB = REPO / ".stack" / "bin" / "ferretdb"
POSTGRES_URL = os.environ.get(
    "RELIABILITY_POSTGRES_URL", "postgres://postgres@127.0.0.1:54329/ferretdb"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivateFerretDB:
    """A FerretDB process of our own on the shared PostgreSQL: stopping it stops only
    this MongoDB endpoint; the data stays in PostgreSQL and the shared FerretDB sees it."""

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.state_dir = state_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(FERRETDB), "--handler=postgresql", f"--postgresql-url={POSTGRES_URL}",
            f"--listen-addr=127.0.0.1:{self.port}", "--telemetry=disable", "--debug-addr=-",
            f"--state-dir={self.state_dir}", f"--log-level={os.environ.get('RELIABILITY_FERRETDB_LOG', 'warn')}",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        if not wait_until(lambda: port_open(self.port), 30):
            raise RuntimeError(f"private FerretDB did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> PrivateFerretDB:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
