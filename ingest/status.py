"""What `ingest status` shows: queue depths, dead-letter depth, document counts."""

from __future__ import annotations

from typing import Any

from ingest import connect
from ingest.errors import IngestError
from ingest.settings import Settings


def collect(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {"queues": {}, "database": settings.database, "collections": {}}
    try:
        for url, source in connect.sqs_queues(settings).items():
            depth = source.depth()
            entry: dict[str, Any] = {
                "visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed,
            }  # fmt: skip
            if source.dead_letter_url:
                from ingest.queue import SqsQueue

                dlq = SqsQueue(source.dead_letter_url, source._client).depth()
                entry["dead_letter"] = {"url": source.dead_letter_url, "visible": dlq.visible}
            report["queues"][url] = entry
    except IngestError as exc:
        report["queues_error"] = str(exc)
    try:
        db = connect.mongo_client(settings)[settings.database]
        for name in sorted(db.list_collection_names()):
            report["collections"][name] = db[name].estimated_document_count()
    except Exception as exc:
        report["mongo_error"] = type(exc).__name__
    return report


def render(report: dict[str, Any]) -> str:
    lines = []
    for url, q in report["queues"].items():
        lines.append(f"queue {url}")
        lines.append(
            f"  visible {q['visible']}  in flight {q['in_flight']}  delayed {q['delayed']}"
        )
        if "dead_letter" in q:
            lines.append(
                f"  dead-letter {q['dead_letter']['visible']}  ({q['dead_letter']['url']})"
            )
    for key in ("queues_error", "mongo_error"):
        if key in report:
            lines.append(f"{key.replace('_', ' ')}: {report[key]}")
    lines.append(f"database {report['database']}")
    for name, count in report["collections"].items():
        lines.append(f"  {name}: {count} documents")
    return "\n".join(lines)
