"""The payload seam: where the bodies of messages too large for SQS are kept (S3), one
protocol (base), S3 behind it (s3), and an in-memory twin (memory). The decode stage
fetches through it, the acknowledge stage deletes through it, `ingest init` creates
the bucket through it."""

from ingest.payloads.base import PayloadRefused, PayloadStore
from ingest.payloads.memory import MemoryPayloads

__all__ = ["MemoryPayloads", "PayloadRefused", "PayloadStore"]
