"""Flask: record user operations without waiting for SQS.

    INGEST_QUEUE_URL=https://sqs.../ingest flask --app docs/examples/flask_app.py run

One Producer per process, made at startup. Under gunicorn (even with
--preload) each worker gets its own buffer and sender thread after the fork;
records buffered when a worker exits are flushed at interpreter exit.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from flask import Flask, jsonify, request

from producer import Producer


def create_app(producer: Producer | None = None) -> Flask:
    app = Flask(__name__)
    sender = producer or Producer(os.environ["INGEST_QUEUE_URL"])
    app.extensions["producer"] = sender

    @app.post("/operations")
    def record_operation() -> Any:
        payload = request.get_json(force=True)
        document = {
            "user_id": str(payload["user_id"]),
            "action": str(payload["action"]),
            "details": payload.get("details", {}),
            "at": datetime.now(UTC),
        }
        record_id = sender.send("operations", document)  # returns at once; no network I/O
        return jsonify({"id": str(record_id)}), 202

    return app


if __name__ == "__main__":
    create_app().run()
