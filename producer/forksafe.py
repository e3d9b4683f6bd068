"""Forking while a sender thread imports.

The sender thread imports boto3, botocore and tenacity on first use (and botocore
imports a few modules lazily on its first call). A process forked while that thread
is inside an import inherits the module half-initialised in sys.modules, and the
child can never finish it: every later import returns the broken module
("partially initialized module 'boto3' has no attribute 'client"). So, before a
fork, wait until no sender thread is inside an import, and hold the import lock
from then until the fork has happened, so that none starts one in between.

The import lock is what CPython itself takes around fork(): a thread that begins
an import waits for it before touching sys.modules, while an import already under
way keeps running (and may need the lock for a nested import: hence we never wait
while holding it).

The sender thread's first client build is the other step a fork must not split:
OpenSSL's SSL_CTX_new runs without the GIL and takes OpenSSL's own locks, and a
child forked meanwhile inherits them held, so its own first SSL context hangs for
good (measured: about 1 fork in 90, landing 100-320 ms after the first send on a
loaded machine, sent nothing and journaled everything at close()). So a client is
built inside `building_client()`, and a fork waits for that too."""

from __future__ import annotations

import _imp
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Collection, Iterator
from types import FrameType
from typing import Final

log = logging.getLogger("producer")

_IMPORT_SYSTEM: Final = frozenset({"importlib._bootstrap", "importlib._bootstrap_external"})
_POLL_SECONDS: Final = 0.001

_holding = threading.local()  # per forking thread: which locks did its before-fork hook take?
_building = threading.Lock()  # held while a thread builds an AWS client


@contextlib.contextmanager
def building_client() -> Iterator[None]:
    """Builds a client (imports, SSL context, credential chain) with no fork in between."""
    with _building:
        yield


def importing(thread_ids: Collection[int]) -> bool:
    """Is any of these threads inside an import (its own, or one it waits for)?"""
    frames = sys._current_frames()
    return any(_in_import(frames.get(ident)) for ident in thread_ids)


def _in_import(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__") in _IMPORT_SYSTEM:
            return True
        frame = frame.f_back
    return False


def hold_imports_still(thread_ids: Collection[int], timeout: float) -> bool:
    """Take the import lock at a moment none of `thread_ids` is inside an import, waiting
    up to `timeout`. True: the lock is held, and release_after_fork() must follow."""
    deadline = time.monotonic() + timeout
    while True:
        _imp.acquire_lock()
        if not importing(thread_ids):
            _holding.held = True
            return True
        _imp.release_lock()
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)  # lets the importing thread run on


def release_after_fork() -> None:
    """In the parent and in the child, after fork(): let imports run again.
    (In the child, CPython hands the forking thread the lock levels it held.)"""
    if getattr(_holding, "held", False):
        _holding.held = False
        with contextlib.suppress(RuntimeError):  # not held after all: nothing to give back
            _imp.release_lock()


def before_fork(thread_ids: Collection[int], timeout: float) -> None:
    """Waits (up to `timeout` in all) until no client is being built and none of
    `thread_ids` is inside an import, then holds both still until the fork is done."""
    deadline = time.monotonic() + timeout
    _holding.building = _building.acquire(timeout=timeout)
    if not _holding.building:
        log.warning(
            "forking while the producer builds its AWS client after %ss: "
            "the child may hang in its first SSL context",
            timeout,
        )
    remaining = max(0.0, deadline - time.monotonic())
    if thread_ids and not hold_imports_still(thread_ids, remaining):
        log.warning(
            "forking while the producer's sender thread is still importing after %ss: "
            "the child may inherit half-imported modules",
            timeout,
        )


def after_fork_in_parent() -> None:
    release_after_fork()
    if getattr(_holding, "building", False):
        _holding.building = False
        _building.release()


def after_fork_in_child() -> None:
    """The child starts with a fresh build lock: the one it inherited may be held by a
    thread that did not come along."""
    global _building
    release_after_fork()
    _building = threading.Lock()
