"""Private servers a fault test may stop on purpose (never the shared stack)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from types import TracebackType

from tests.support.harness import wait_until

REPO = Path(__file__).resolve().parents[2]
STACK_SH = REPO / "scripts" / "stack.sh"
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
    """A FerretDB process of our own on the shared PostgreSQL (or `postgres_url`):
    stopping it stops only this MongoDB endpoint; the data stays in PostgreSQL and the
    shared FerretDB sees it."""

    def __init__(self, state_dir: Path, log_path: Path, postgres_url: str = POSTGRES_URL) -> None:
        self.port = free_port()
        self.state_dir = state_dir
        self.log_path = log_path
        self.postgres_url = postgres_url
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(FERRETDB), "--handler=postgresql", f"--postgresql-url={self.postgres_url}",
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


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL of our own (as the local stack's, in a folder of the test's), so
    that pausing it pauses no other test. Runs as the `postgres` user, like the stack's."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user cannot enter root's folders.
        self.workdir = Path(tempfile.mkdtemp(prefix="ingest-test-pg-"))
        self.data = self.workdir / "pgdata"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/ferretdb?pool_max_conns=50"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.workdir, "postgres", "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth=trust", "-E", "UTF8", "--locale=C")  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.workdir}"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options,
                          "-l", str(self.workdir / "postgres.log"), "-w", "start")  # fmt: skip
        self._as_postgres("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                          "-d", "postgres", "-c", "CREATE DATABASE ferretdb")  # fmt: skip

    def stop(self) -> None:
        self.resume()
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
             "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def pause(self) -> None:
        """SIGSTOP to the postmaster and every backend (each in a process group of its
        own): queries hang, nothing fails, and no new connection is served."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):  # a backend that just ended
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        if (self.data / "postmaster.pid").exists():
            for pid in self._processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _processes(self) -> list[int]:
        postmaster = self._postmaster()
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", "setsid", *args], cwd="/",
                       capture_output=True, timeout=120, check=True)  # fmt: skip

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _sqs_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?Action=ListQueues", timeout=1):
            return True
    except OSError:
        return False


class PrivateElasticMQ:
    """An ElasticMQ of our own (in memory, the local stack's jars and configuration on
    another port): killing it is what a user sees when their local SQS dies."""

    def __init__(self, workdir: Path, heap: str = "256m") -> None:
        self.port = free_port()
        self.workdir = workdir
        self.heap = heap
        self.log_path = workdir / "elasticmq.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "elasticmq.conf"
        # stack.sh's own functions: the jars (fetched or copied from the cache when
        # missing) and the configuration, with our port.
        prepared = subprocess.run(
            ["bash", "-c", f'source "{STACK_SH}"; elasticmq_fetch; elasticmq_conf "$1"; echo "$EMQ_LIB"',
             "stack.sh", str(conf)],
            env={**os.environ, "STACK_SQS_PORT": str(self.port)}, capture_output=True, text=True,
            timeout=600, check=True,
        )  # fmt: skip
        lib = prepared.stdout.strip().splitlines()[-1]
        args = ["java", "-Xms64m", f"-Xmx{self.heap}", f"-Dconfig.file={conf}", "-cp", f"{lib}/*",
                "org.elasticmq.server.Main"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        if not wait_until(lambda: _sqs_answers(self.port), 60):
            self.kill()
            raise RuntimeError(f"private ElasticMQ did not start; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, its queues with it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)

    def __enter__(self) -> PrivateElasticMQ:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
