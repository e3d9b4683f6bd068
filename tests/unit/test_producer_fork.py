"""Fork safety: a child sends only its own records, never the parent's buffer."""

from __future__ import annotations

import _imp
import importlib
import json
import multiprocessing
import os
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from producer import Producer, forksafe, wire
from producer import core as producer_core
from tests.support.frames import waiting_in
from tests.support.import_gate import GATE
from tests.support.waiting import child_exit_code, wait_until

URL = "http://sqs.local/000000000000/q"


class PidLoggingSQS:
    """Appends every accepted record, with the pid that sent it, to a file
    (an O_APPEND file is shared safely across fork)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        lines = []
        for entry in Entries:
            for record in wire.decode_message(entry["MessageBody"], entry["MessageAttributes"]):
                assert isinstance(record, wire.Record)
                lines.append(json.dumps([os.getpid(), record.document["who"]]) + "\n")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, "".join(lines).encode())
        os.close(fd)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def test_child_sends_its_own_records_only(tmp_path: Path) -> None:
    log = tmp_path / "sent.log"
    producer = Producer(
        URL, sqs_client=PidLoggingSQS(log), journal_dir=tmp_path / "j", linger_seconds=30
    )
    for n in range(5):
        producer.send("events", {"who": f"parent-{n}"})  # buffered: linger is long
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            producer.send("events", {"who": "child-0"})
            producer.send("events", {"who": "child-1"})
            code = 0 if producer.flush(5) and producer.stats().accepted == 2 else 3
        finally:
            os._exit(code)
    assert child_exit_code(pid) == 0
    assert producer.flush(5)
    producer.close()
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    by_pid: dict[int, list[str]] = {}
    for sender_pid, who in sent:
        by_pid.setdefault(sender_pid, []).append(who)
    assert by_pid == {
        pid: ["child-0", "child-1"],
        os.getpid(): [f"parent-{n}" for n in range(5)],
    }


def test_child_exit_flushes_its_records_via_atexit(tmp_path: Path) -> None:
    log = tmp_path / "sent.log"
    producer = Producer(
        URL, sqs_client=PidLoggingSQS(log), journal_dir=tmp_path / "j", linger_seconds=30
    )
    producer.send("events", {"who": "parent"})
    pid = os.fork()
    if pid == 0:
        try:
            producer.send("events", {"who": "child"})
            import atexit

            atexit._run_exitfuncs()  # what a normal interpreter exit does
        finally:
            os._exit(0)
    assert child_exit_code(pid) == 0
    assert wait_until(log.exists)
    assert [json.loads(line)[1] for line in log.read_text().splitlines()] == ["child"]
    producer.close()
    assert [json.loads(line)[1] for line in log.read_text().splitlines()] == ["child", "parent"]


SLOW_MODULE = """
from tests.support.import_gate import GATE
GATE.entered.set()
GATE.release.wait(30)
complete = True
"""


class ImportingSQS:
    """Imports a module on its first call, on the sender thread, as botocore does."""

    def __init__(self, module: str) -> None:
        self.module = module

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        importlib.import_module(self.module)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def _fork_once_it_waits(where: str, release: threading.Event, child: Callable[[], bool]) -> int:
    """Forks; `release` is set once the fork waits in the function `where`. The child
    exits 0 when `child()` holds; returns its exit code."""
    forking = threading.get_ident()

    def release_once_fork_waits() -> None:
        wait_until(lambda: waiting_in(forking, where), timeout=10)
        release.set()  # also when the fork did not wait: the test then fails, but ends

    helper = threading.Thread(target=release_once_fork_waits)
    helper.start()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if child() else 1)
    helper.join(30)
    return child_exit_code(pid)


def test_a_fork_waits_for_the_sender_threads_import_to_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked in the middle of the sender's import, the child would own a half-initialised
    module for its whole life. The fork waits until the import is complete."""
    module = f"slow_module_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    GATE.entered.clear()
    GATE.release.clear()
    producer = Producer(URL, sqs_client=ImportingSQS(module), journal_dir=tmp_path / "j")
    producer.send("events", {"who": "parent"})
    assert GATE.entered.wait(10)  # the sender thread is inside the import now
    exit_code = _fork_once_it_waits(
        "hold_imports_still",
        GATE.release,
        lambda: getattr(sys.modules.get(module), "complete", False) is True,
    )
    assert producer.flush(10)
    producer.close()
    assert exit_code == 0, "the child got a half-imported module"
    assert not _imp.lock_held()  # the fork gave the import lock back


def test_the_wait_for_imports_is_bounded_and_leaves_the_import_lock_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"slow_module_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    GATE.entered.clear()
    GATE.release.clear()
    importer = threading.Thread(target=importlib.import_module, args=(module,))
    importer.start()
    try:
        assert GATE.entered.wait(10)
        assert importer.ident is not None and forksafe.importing([importer.ident])
        assert not forksafe.hold_imports_still([importer.ident], timeout=0)
        assert not _imp.lock_held()  # gave up without keeping the lock
    finally:
        GATE.release.set()
        importer.join(10)
    assert forksafe.hold_imports_still([importer.ident], timeout=0)
    assert _imp.lock_held()
    forksafe.release_after_fork()
    assert not _imp.lock_held()


def test_a_fork_waits_for_the_sender_to_finish_building_its_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked while the sender builds its boto3 client, the child inherited OpenSSL's
    locks held and hung in its own first SSL context. The fork waits for the build."""
    entered, release = threading.Event(), threading.Event()
    built: list[bool] = []

    def slow_build() -> PidLoggingSQS:
        entered.set()
        release.wait(30)
        built.append(True)
        return PidLoggingSQS(tmp_path / "sent.log")

    monkeypatch.setattr(Producer, "_build_sqs_client", staticmethod(slow_build))
    producer = Producer(URL, journal_dir=tmp_path / "j")
    producer.send("events", {"who": "parent"})
    assert entered.wait(10)  # the sender thread is inside the build now
    exit_code = _fork_once_it_waits("before_fork", release, lambda: bool(built))
    assert producer.flush(10)
    producer.close()
    assert exit_code == 0, "the fork split the client's build"


def test_a_child_forked_after_the_wait_gave_up_can_still_build_a_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(producer_core, "FORK_WAIT_SECONDS", 0.1)
    holder_in, holder_out = threading.Event(), threading.Event()

    def hold_the_build() -> None:
        with forksafe.building_client():
            holder_in.set()
            holder_out.wait(30)

    holder = threading.Thread(target=hold_the_build)
    holder.start()
    try:
        assert holder_in.wait(10)
        pid = os.fork()  # its wait gives up: the holder keeps building
        if pid == 0:
            with forksafe.building_client():  # the holder did not come along: a fresh lock
                os._exit(0)
        assert child_exit_code(pid, timeout=10) == 0
    finally:
        holder_out.set()
        holder.join(30)


_pool_producer: list[Producer] = []  # a worker's producer comes along with the fork


def _send_twenty(worker: int) -> int:
    for k in range(20):
        _pool_producer[0].send("events", {"who": f"w{worker}-{k}"})
    return worker


def test_multiprocessing_pool_workers_flush_at_their_exit(tmp_path: Path) -> None:
    """A multiprocessing worker leaves through os._exit, which skips atexit: records it
    buffered were lost when the pool closed. Its own exit hook now closes the producer."""
    log = tmp_path / "sent.log"
    producer = Producer(
        URL, sqs_client=PidLoggingSQS(log), journal_dir=tmp_path / "j", linger_seconds=30
    )
    producer.send("events", {"who": "parent"})
    _pool_producer[:] = [producer]
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        assert pool.map(_send_twenty, range(4)) == [0, 1, 2, 3]
        pool.close()  # workers exit when their queue ends, as in pool.close(); pool.join()
        pool.join()
    finally:
        pool.terminate()
    producer.close()
    sent = sorted(json.loads(line)[1] for line in log.read_text().splitlines())
    assert sent == sorted(["parent"] + [f"w{n}-{k}" for n in range(4) for k in range(20)])
