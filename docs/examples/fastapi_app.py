"""FastAPI: record user operations from async handlers without waiting for SQS.

    INGEST_QUEUE_URL=https://sqs.../ingest uvicorn docs.examples.fastapi_app:app

AsyncProducer.send() is synchronous and never does I/O, so it is safe to call
on the event loop; flush() and close() wait in a worker thread. The lifespan
closes the producer on shutdown, sending (or journaling) what is buffered.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request

from producer import AsyncProducer


def create_app(producer: AsyncProducer | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.producer = producer or AsyncProducer(os.environ["INGEST_QUEUE_URL"])
        yield
        await app.state.producer.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/operations", status_code=202)
    async def record_operation(payload: dict[str, Any], request: Request) -> dict[str, str]:
        document = {
            "user_id": str(payload["user_id"]),
            "action": str(payload["action"]),
            "details": payload.get("details", {}),
            "at": datetime.now(UTC),
        }
        record_id = request.app.state.producer.send("operations", document)
        return {"id": str(record_id)}

    return app


if os.environ.get("INGEST_QUEUE_URL"):
    app = create_app()
