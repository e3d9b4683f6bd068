"""Producer benchmark against the local ElasticMQ.

1. send() latency on the caller's thread (p50/p99/p99.9 in µs, ~1 KB records)
   while the background thread flushes to a real queue: once in a tight loop
   (the worst case: the sender competes for the GIL non-stop) and once paced
   like a busy web app (`rate` records/s).
2. CPU per record of the whole process (send() on the caller's thread plus the sender
   thread's encoding, packing, compression and SendMessageBatch calls), per wire format,
   sending to a real queue as fast as it takes them.
3. The cost of tracing: send()'s CPU on the caller's thread outside any span and
   inside a recording OpenTelemetry span (the SDK, no exporter), when installed.
4. Billable SQS requests per record, by the 64 KiB chunk rule (each request
   costs ceil(payload_bytes / 65536), at least 1), for the whole round trip:
   sends, 10-message receives until an empty one, DeleteMessageBatch of 10.
   Modes: single (SendMessage per record), batched (SendMessageBatch of 10
   one-record messages), packed and packed_zstd (the Producer, format 1),
   format2_zstd (the Producer's defaults) and format2_zstd6 (compression_level=6).

    python -m bench.bench_producer [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import bson
from botocore.config import Config

from bench.infra import AcceptingSQS
from bench.records import COLLECTION, generate
from producer import Producer, wire

CHUNK = 64 * 1024


def _client() -> Any:
    return boto3.client("sqs", config=Config(max_pool_connections=10))


@contextmanager
def _queue(client: Any) -> Iterator[str]:
    url: str = client.create_queue(QueueName=f"bench-producer-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    try:
        yield url
    finally:
        client.delete_queue(QueueUrl=url)


def _cost(payload_bytes: int) -> int:
    return max(1, math.ceil(payload_bytes / CHUNK))


def _entry_bytes(body: str, attributes: dict[str, Any]) -> int:
    return len(body.encode()) + wire.attributes_size(attributes)


class _CountingClient:
    """Passes SendMessageBatch through and adds up its billable requests."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.billable = 0

    def send_message_batch(self, **kwargs: Any) -> Any:
        entries = kwargs["Entries"]
        self.billable += _cost(
            sum(_entry_bytes(e["MessageBody"], e["MessageAttributes"]) for e in entries)
        )
        return self.client.send_message_batch(**kwargs)


# ---------------------------------------------------------------- latency


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000, 1)

    return {"p50": at(0.50), "p99": at(0.99), "p99_9": at(0.999), "max": at(1.0)}


def _latency(
    url: str,
    documents: list[dict[str, Any]],
    rate: float | None,
    compression: str = "identity",
    wire_format: int = 1,
) -> dict[str, Any]:
    samples: list[int] = []
    gap = 1.0 / rate if rate else 0.0
    with (
        tempfile.TemporaryDirectory() as journal,
        # The producer's own client (from the environment), as a web app would use it.
        Producer(
            url, journal_dir=journal, compression=compression, wire_format=wire_format
        ) as producer,
    ):
        clock = time.perf_counter_ns
        next_at = time.perf_counter()
        for document in documents:
            if gap:
                # Sleep like a request thread waiting on its client: the GIL is free meanwhile.
                next_at += gap
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            started = clock()
            producer.send(COLLECTION, document)
            samples.append(clock() - started)
        assert producer.flush(60)
        stats = producer.stats()
    assert stats.sent == len(documents), stats
    return {
        "records": len(documents),
        "rate_per_s": rate,
        "compression": compression,
        "wire_format": wire_format,
        **_percentiles(samples),
    }


def _paced_encode(documents: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """The baseline for the paced send(): bson.encode alone, paced the same way, in the
    same run. On a busy machine a thread woken from sleep has a tail of its own."""
    samples: list[int] = []
    gap = 1.0 / rate
    clock = time.perf_counter_ns
    next_at = time.perf_counter()
    for document in documents:
        next_at += gap
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        started = clock()
        bson.encode(document)
        samples.append(clock() - started)
    return {"records": len(documents), "rate_per_s": rate, **_percentiles(samples)}


# ---------------------------------------------------------------- CPU per record


def _cpu(
    client: Any, url: str, documents: list[dict[str, Any]], wire_format: int
) -> dict[str, Any]:
    """Process CPU (every thread) from the first send() until everything is in SQS.
    The bench's own objects (every scenario's records) are frozen out of the garbage
    collector meanwhile: its full passes over them are this process's cost, not the
    producer's."""
    with tempfile.TemporaryDirectory() as journal:
        producer = Producer(url, sqs_client=client, journal_dir=journal, wire_format=wire_format,
                            compression="zstd")  # fmt: skip
        gc.collect()
        gc.freeze()
        started, cpu_started = time.perf_counter(), time.process_time()
        for document in documents:
            producer.send(COLLECTION, document)
        assert producer.flush(120)
        cpu = time.process_time() - cpu_started
        seconds = time.perf_counter() - started
        gc.unfreeze()
        sent = producer.stats().sent
        producer.close()
    assert sent == len(documents), sent
    return {
        "records": len(documents),
        "wire_format": wire_format,
        "compression": producer.config.encoding,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_us_per_record": round(cpu * 1e6 / len(documents), 1),
    }


# ---------------------------------------------------------------- tracing


def _traced_cost(records: int, rounds: int = 5) -> dict[str, Any] | None:
    """Caller-thread CPU per send(), untraced and in a span, alternating; medians."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return None
    tracer = TracerProvider().get_tracer("bench")
    samples: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as journal:
        producer = Producer("http://sqs.invalid/000000000000/q", sqs_client=AcceptingSQS(),
                            journal_dir=journal)  # fmt: skip
        for round_ in range(rounds):
            for traced in (False, True):
                documents = generate(records, seed=round_)
                started = time.thread_time()
                if traced:
                    with trace.use_span(tracer.start_span("request"), end_on_exit=True):
                        for document in documents:
                            producer.send(COLLECTION, document)
                else:
                    for document in documents:
                        producer.send(COLLECTION, document)
                samples[traced].append((time.thread_time() - started) * 1e6 / records)
        producer.close()
    untraced, traced_us = statistics.median(samples[False]), statistics.median(samples[True])
    return {
        "records": records,
        "rounds": rounds,
        "untraced_us": round(untraced, 2),
        "traced_us": round(traced_us, 2),
        "traced_extra_us": round(traced_us - untraced, 2),
    }


# ---------------------------------------------------------------- requests per record


def _drain(client: Any, url: str) -> tuple[int, int, int]:
    """Receive everything (10 at a time, until an empty receive) and delete it.
    Returns (records, billable receives, billable deletes)."""
    records = receives = deletes = 0
    while True:
        messages = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        ).get("Messages", [])
        receives += _cost(
            sum(_entry_bytes(m["Body"], m.get("MessageAttributes", {})) for m in messages)
        )
        if not messages:
            return records, receives, deletes
        for message in messages:
            records += len(wire.decode_message(message["Body"], message.get("MessageAttributes")))
        client.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
        deletes += 1


def _send_single(client: Any, url: str, lines: list[str]) -> int:
    attributes = wire.message_attributes(wire.IDENTITY, 1)
    for line in lines:
        client.send_message(QueueUrl=url, MessageBody=line, MessageAttributes=attributes)
    return sum(_cost(_entry_bytes(line, attributes)) for line in lines)


def _send_batched(client: Any, url: str, lines: list[str]) -> int:
    attributes = wire.message_attributes(wire.IDENTITY, 1)
    billable = 0
    for start in range(0, len(lines), 10):
        chunk = lines[start : start + 10]
        entries = [
            {"Id": str(i), "MessageBody": line, "MessageAttributes": attributes}
            for i, line in enumerate(chunk)
        ]
        response = client.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response["Failed"]
        billable += _cost(sum(_entry_bytes(line, attributes) for line in chunk))
    return billable


def _send_packed(
    client: Any,
    url: str,
    documents: list[dict[str, Any]],
    compression: str,
    wire_format: int,
    level: int | None = None,
) -> int:
    counting = _CountingClient(client)
    with (
        tempfile.TemporaryDirectory() as journal,
        Producer(
            url, sqs_client=counting, journal_dir=journal, compression=compression,
            wire_format=wire_format, compression_level=level,
        ) as producer,
    ):  # fmt: skip
        for document in documents:
            producer.send(COLLECTION, document)
        assert producer.flush(60)
        assert producer.stats().sent == len(documents)
    return counting.billable


def _requests(client: Any, mode: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    lines = [wire.encode_record(COLLECTION, document) for document in documents]
    with _queue(client) as url:
        if mode == "single":
            sends = _send_single(client, url, lines)
        elif mode == "batched":
            sends = _send_batched(client, url, lines)
        else:
            compression = "identity" if mode == "packed" else "zstd"
            wire_format = 2 if mode.startswith("format2") else 1
            level = 6 if mode == "format2_zstd6" else None
            sends = _send_packed(client, url, documents, compression, wire_format, level)
        received, receives, deletes = _drain(client, url)
    assert received == len(documents), (mode, received)
    total = sends + receives + deletes
    count = len(documents)
    return {
        "records": count,
        "send": round(sends / count, 5),
        "receive": round(receives / count, 5),
        "delete": round(deletes / count, 5),
        "total": round(total / count, 5),
    }


def run(quick: bool) -> dict[str, Any]:
    client = _client()
    count = 3000 if quick else 30000
    documents = generate(count)
    line_bytes = sum(len(wire.encode_record(COLLECTION, d)) for d in documents) / count
    # Tails depend on how busy the machine is: keep the load next to the figures.
    result: dict[str, Any] = {
        "record_bytes_mean": round(line_bytes, 1),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with _queue(client) as url:
        # Paced, as a web app sends: the target. Format 2 with zstd is the default.
        result["send_latency_us"] = {
            "paced": _latency(url, generate(count), rate=5000, compression="zstd", wire_format=2),
            "paced_format1": _latency(url, generate(count), 5000, "zstd", 1),
            "paced_bson_encode_alone": _paced_encode(generate(count), 5000),
            "tight_loop": _latency(url, generate(count), None, "zstd", 2),
            "tight_loop_format1": _latency(url, generate(count), None, "zstd", 1),
        }
    with _queue(client) as url:
        cpu_records = 5000 if quick else 30000
        result["cpu_us_per_record"] = {
            f"format{fmt}": _cpu(client, url, generate(cpu_records), fmt) for fmt in (2, 1)
        }
    result["send_cpu_us_traced"] = _traced_cost(2000 if quick else 10000)
    request_records = 1000 if quick else 5000
    result["billable_requests_per_record"] = {
        mode: _requests(client, mode, documents[:request_records])
        for mode in ("single", "batched", "packed", "packed_zstd", "format2_zstd", "format2_zstd6")
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records, for a smoke run")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
