"""What `ingest status` shows: queue depths (visible, in flight, delayed),
dead-letter depth, document counts per collection, the live replicas and how long
the backlog takes to drain at their write rate (and at the ceiling), and the
readiness of running consumers (their /readyz), once or refreshed with --watch."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ingest.errors import IngestError
from ingest.queues.base import MessageQueue
from ingest.sinks.base import DocumentStore, ReplicaBoard


def collect(
    queues: Callable[[], Mapping[str, MessageQueue]],
    store: DocumentStore,
    board: ReplicaBoard,
    replica_window: float,
    consumers: Sequence[str] = (),
) -> dict[str, Any]:
    """One report. `queues` opens the queues (reading their redrive policy is an SQS
    call too). What did not answer is in the report's errors, and `ok` is False."""
    report: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "queues": {},
        "database": store.database,
        "collections": {},
        "errors": [],
    }
    try:
        for url, source in queues().items():
            depth = source.depth()
            entry: dict[str, Any] = {
                "visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed,
            }  # fmt: skip
            dead = source.dead_letter_depth()
            if dead is not None:
                entry["dead_letter"] = {
                    "url": source.dead_letter_url, "visible": dead.visible, "in_flight": dead.in_flight,
                }  # fmt: skip
            report["queues"][url] = entry
    except IngestError as exc:
        report["errors"].append(str(exc))
    try:
        report["collections"] = store.collection_counts()
        report["replicas"] = [_replica(doc) for doc in board.live(replica_window)]
    except IngestError as exc:
        report["errors"].append(str(exc))
    if report["queues"] and "replicas" in report:
        report["drain"] = drain_estimate(report["queues"], report["replicas"])
    if consumers:
        report["consumers"] = {url: consumer_health(url) for url in consumers}
    unready = [
        url for url, health in report.get("consumers", {}).items() if not health.get("ready")
    ]
    report["ok"] = not report["errors"] and not unready
    return report


def readyz_url(url: str) -> str:
    """A consumer given as host:port or a base URL means its /readyz."""
    if "://" not in url:
        url = "http://" + url
    scheme, rest = url.split("://", 1)
    return url if "/" in rest.rstrip("/") else f"{scheme}://{rest.rstrip('/')}/readyz"


def consumer_health(url: str, timeout: float = 2.0) -> dict[str, Any]:
    """The consumer's /readyz answer: 200 and its checks, or why it did not answer."""
    target = readyz_url(url)
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return {"url": target, "status": response.status, **_body(response.read())}
    except urllib.error.HTTPError as exc:  # 503: answers, but not ready
        return {"url": target, "status": exc.code, **_body(exc.read())}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"url": target, "status": None, "ready": False, "error": str(reason)}


def _body(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {"ready": False, "error": "not a /readyz answer"}
    return data if isinstance(data, dict) else {"ready": False, "error": "not a /readyz answer"}


def render(report: dict[str, Any]) -> str:
    lines = [f"at {report['time']}"] if "time" in report else []
    for url, q in report["queues"].items():
        lines.append(f"queue {url}")
        lines.append(
            f"  visible {q['visible']}  in flight {q['in_flight']}  delayed {q['delayed']}"
        )
        if "dead_letter" in q:
            dead = q["dead_letter"]
            lines.append(
                f"  dead-letter {dead['visible']} (+{dead.get('in_flight', 0)} in flight)"
                f"  ({dead['url']})"
            )
    lines.extend(f"error: {error}" for error in report.get("errors", []))
    lines.extend(_render_replicas(report.get("replicas", [])))
    if "drain" in report:
        lines.extend(_render_drain(report["drain"]))
    lines.append(f"database {report['database']}")
    for name, count in report["collections"].items():
        lines.append(f"  {name}: {count} documents")
    for url, health in report.get("consumers", {}).items():
        state = "ready" if health.get("ready") else "NOT READY"
        detail = health.get("error") or ", ".join(
            f"{k}: {v}" for k, v in health.get("checks", {}).items() if v != "ok"
        )
        lines.append(
            f"consumer {url}: {state} ({health.get('status')}){' ' + detail if detail else ''}"
        )
    return "\n".join(lines)


def show(
    collect_report: Callable[[], dict[str, Any]],
    *,
    as_json: bool = False,
    watch: float | None = None,
    echo: Callable[[str], None] = print,
    rounds: int | None = None,
) -> bool:
    """Print once, or every `watch` seconds until interrupted (or `rounds` times).
    Returns whether the last report was ok."""
    ok = False
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends --watch quietly
        count = 0
        while True:
            report = collect_report()
            ok = bool(report["ok"])
            text = json.dumps(report, default=str) if as_json else render(report)
            if watch and not as_json:
                text = "\x1b[H\x1b[2J" + text  # clear the screen, like watch(1)
            echo(text)
            count += 1
            if not watch or (rounds is not None and count >= rounds):
                break
            time.sleep(watch)
    return ok


def _replica(doc: dict[str, Any]) -> dict[str, Any]:
    keys = ("ceiling", "pool_ceiling", "mode", "write_rate", "records_per_message", "seen")
    return {"id": doc["_id"], **{key: doc.get(key) for key in keys}}


def drain_estimate(
    queues: Mapping[str, Mapping[str, Any]], replicas: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """How long the backlog (visible, in flight and delayed messages) takes to write at
    the live replicas' current write rate, and at the pool's ceiling if there is one.
    Replicas report records per second and records per message; None: it never drains."""
    messages = sum(q["visible"] + q["in_flight"] + q["delayed"] for q in queues.values())
    rate = sum(r.get("write_rate") or 0.0 for r in replicas)
    sizes = [(r["records_per_message"], r.get("write_rate") or 0.0)
             for r in replicas if r.get("records_per_message")]  # fmt: skip
    weight = sum(w for _, w in sizes)
    if weight:
        per_message = sum(size * w for size, w in sizes) / weight
    else:
        per_message = sum(size for size, _ in sizes) / len(sizes) if sizes else 1.0
    records = messages * per_message
    ceiling = max((r.get("pool_ceiling") or 0.0 for r in replicas), default=0.0)
    return {
        "backlog_messages": messages, "records_per_message": round(per_message, 2),
        "backlog_records": round(records), "write_rate": round(rate, 1),
        "seconds_at_write_rate": _seconds(records, rate), "ceiling": ceiling or None,
        "seconds_at_ceiling": _seconds(records, ceiling) if ceiling else None,
    }  # fmt: skip


def _seconds(records: float, rate: float) -> float | None:
    if not records:
        return 0.0
    return round(records / rate, 1) if rate > 0 else None


def duration(seconds: float) -> str:
    """4s, 3m05s, 2h10m, 3d04h."""
    whole = round(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                          ("m", 60, "s", 1)):  # fmt: skip
        if whole >= size:
            return f"{whole // size}{unit}{whole % size // small_size:02d}{small}"
    return f"{whole}s"


def _render_drain(drain: Mapping[str, Any]) -> list[str]:
    if not drain["backlog_messages"]:
        return ["backlog: none"]
    head = (f"backlog {drain['backlog_messages']} messages "
            f"(about {drain['backlog_records']} records at {drain['records_per_message']} a message)")  # fmt: skip
    at_rate = drain["seconds_at_write_rate"]
    if at_rate is None:
        parts = ["no replica is writing: it does not drain"]
    else:
        parts = [
            f"drains in {duration(at_rate)} at the current {drain['write_rate']:.0f} records/s"
        ]
    if drain["seconds_at_ceiling"] is not None:
        parts.append(f"{duration(drain['seconds_at_ceiling'])} at the ceiling of "
                     f"{drain['ceiling']:.0f} records/s")  # fmt: skip
    return [f"{head}: {'; '.join(parts)}"]


def _render_replicas(replicas: list[dict[str, Any]]) -> list[str]:
    if not replicas:
        return []
    pool = replicas[0].get("pool_ceiling")
    total = sum(r.get("write_rate") or 0.0 for r in replicas)
    if pool is None:
        head = f"no write ceiling, writing {total:.0f} records/s, {len(replicas)} live replicas"
    else:
        head = (f"write ceiling {pool} records/s ({replicas[0].get('mode')}), "
                f"writing {total:.0f} records/s, {len(replicas)} live replicas")  # fmt: skip
    lines = [head]
    for r in replicas:
        share = f"ceiling {r.get('ceiling')}/s  " if r.get("ceiling") is not None else ""
        lines.append(f"  {r['id']}: {share}writing {r.get('write_rate')}/s")
    return lines
