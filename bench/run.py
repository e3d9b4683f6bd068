"""Runs the benchmark suite and writes bench/results/latest.json, docs/performance.md and
docs/performance.png; prints the JSON.

    python -m bench.run [--quick] [--only NAME[,NAME...]]

Names: ceilings, ours, ours_format1, ours_single, json_minimal, naive_batched, peer, naive,
overhead, producer, scaling (or "consumers" for the seven consumers). With --only, the
other figures are kept from the previous latest.json and ratios and targets are
recomputed."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bench import ceilings, contenders, ours, overhead, report, scaling
from bench.records import generate, record_lines

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
MARKDOWN = ROOT / "docs" / "performance.md"
CHART = ROOT / "docs" / "performance.png"


@dataclass(frozen=True)
class Sizes:
    slow: int  # naive: one insert_one and one delete per record
    single: int  # one record per message (SQS calls dominate)
    fast: int  # packed messages
    sqs_packed_messages: int
    budget: float  # seconds an in-process contender may run before it is measured as it stands
    quick: bool

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(2_000, 10_000, 20_000, 1_000, budget=15.0, quick=True)
        return cls(10_000, 100_000, 100_000, 4_000, budget=240.0, quick=False)


# A scenario gets the sizes, the documents and the figures this run has so far.
Scenario = Callable[[Sizes, list[dict[str, Any]], dict[str, Any]], dict[str, Any]]


Contender = Callable[[list[dict[str, Any]], float], dict[str, Any]]


def _consumer(name: str, run: Contender, size: str) -> Scenario:
    def scenario(
        sizes: Sizes, documents: list[dict[str, Any]], done: dict[str, Any]
    ) -> dict[str, Any]:
        detail = run(documents[: getattr(sizes, size)], sizes.budget)
        result = {"consumer_rps": {name: detail["rps"]}, "consumer_detail": {name: detail}}
        if "cpu_us_per_record" in detail:  # our `ingest run`: the whole process, per format
            label = {"ours": "format2", "ours_format1": "format1"}.get(name, name)
            result["consumer_cpu_us_per_record"] = {label: detail["cpu_us_per_record"]}
        return result

    return scenario


def _ceilings(
    sizes: Sizes, documents: list[dict[str, Any]], done: dict[str, Any]
) -> dict[str, Any]:
    mongo = ceilings.mongo(documents[: sizes.fast])
    mongo_raw = ceilings.mongo(documents[: sizes.fast], raw=True)
    single = ceilings.sqs_single(documents[: sizes.single])
    packed = ceilings.sqs_packed(documents[: sizes.fast], sizes.sqs_packed_messages)
    return {
        "ceiling_rps": {
            "sqs": packed["rps"], "mongo": mongo["rps"], "mongo_raw_bson": mongo_raw["rps"],
            "sqs_messages_per_s": single["messages_per_s"],
            "sqs_packed_messages_per_s": packed["messages_per_s"],
        },
        "ceiling_detail": {
            "sqs_single": single, "sqs_packed": packed, "mongo": mongo, "mongo_raw_bson": mongo_raw,
        },
    }  # fmt: skip


def _overhead(
    sizes: Sizes, documents: list[dict[str, Any]], done: dict[str, Any]
) -> dict[str, Any]:
    detail = overhead.run(documents[: sizes.fast])
    return {"overhead_us_per_record": detail["us_per_record"], "overhead_detail": detail}


def _producer(
    sizes: Sizes, documents: list[dict[str, Any]], done: dict[str, Any]
) -> dict[str, Any]:
    from bench import bench_producer

    detail = bench_producer.run(sizes.quick)
    costs = detail["billable_requests_per_record"]
    paced = detail["send_latency_us"]["paced"]
    baseline = detail["send_latency_us"]["paced_bson_encode_alone"]
    cpu = detail["cpu_us_per_record"]
    return {
        "requests_per_record": {mode: costs[mode]["total"] for mode in costs},
        "send_latency_us": {
            "p50": paced["p50"],
            "p99": paced["p99"],
            "p999": paced["p99_9"],
            "bson_encode_alone_p99": baseline["p99"],
        },
        "producer_cpu_us_per_record": {name: cpu[name]["cpu_us_per_record"] for name in cpu},
        "producer_detail": detail,
    }


def _scaling(sizes: Sizes, documents: list[dict[str, Any]], done: dict[str, Any]) -> dict[str, Any]:
    # One process is exactly `ours`: reuse this run's figure rather than measure it twice.
    ours_detail = (
        done.get("consumer_detail", {}).get("ours") if "ours" in done.get("ran", ()) else None
    )
    counts = scaling.PROCESSES if ours_detail is None else scaling.PROCESSES[1:]
    detail = scaling.run(documents[: sizes.fast], counts)
    if ours_detail is not None:
        detail = {"1": ours_detail, **detail}
    return {"scaling_rps": {n: d["rps"] for n, d in detail.items()}, "scaling_detail": detail}


# Ceilings first and beside `ours`, so the two are measured under the same background load.
def _operations(
    sizes: Sizes, documents: list[dict[str, Any]], done: dict[str, Any]
) -> dict[str, Any]:
    """Updates/s and deletes/s beside inserts/s, one run; exactly-once $inc's cost."""
    from bench import operations

    return {"operations": operations.run(count=min(sizes.fast, 5000), rounds=3)}


SCENARIOS: dict[str, Scenario] = {
    "ceilings": _ceilings,
    "operations": _operations,
    # `ours` always drains the whole queue: its sizes finish well within the budget.
    "ours": _consumer("ours", lambda d, _: ours.run(d, packed=True), "fast"),
    "ours_format1": _consumer(
        "ours_format1",
        lambda d, _: ours.run(d, packed=True, wire_format=1, compression="zstd"),
        "fast",
    ),
    "ours_single": _consumer("ours_single", lambda d, _: ours.run(d, packed=False), "single"),
    "json_minimal": _consumer("json_minimal", contenders.json_minimal, "fast"),
    "naive_batched": _consumer("naive_batched", contenders.naive_batched, "single"),
    "peer": _consumer("peer", contenders.peer, "single"),
    "naive": _consumer("naive", contenders.naive, "slow"),
    "overhead": _overhead,
    "producer": _producer,
    "scaling": _scaling,
}
GROUPS = {
    "consumers": (
        "ours", "ours_format1", "ours_single", "json_minimal", "naive_batched", "peer", "naive",
    ),
}  # fmt: skip


def _ratio(a: Any, b: Any) -> float | None:
    return (
        round(a / b, 2) if isinstance(a, int | float) and isinstance(b, int | float) and b else None
    )


def _target(text: str, value: Any, ok: Callable[[float], bool]) -> dict[str, Any]:
    return {"target": text, "value": value, "met": value is not None and ok(value)}


def _median_run(result: dict[str, Any]) -> float | None:
    runs = result.get("ceiling_detail", {}).get("mongo", {}).get("runs_rps") or []
    return float(statistics.median(runs)) if runs else None


def judge(result: dict[str, Any]) -> None:
    """Adds ratios (ours against each baseline) and met/not met per target."""
    rps = result.get("consumer_rps", {})
    ceiling = result.get("ceiling_rps", {})
    limits = [v for v in (ceiling.get("sqs"), ceiling.get("mongo")) if v]
    ours_rps = rps.get("ours")
    result["ratios"] = {
        "ours/naive": _ratio(ours_rps, rps.get("naive")),
        "ours/naive_batched": _ratio(ours_rps, rps.get("naive_batched")),
        "ours/peer": _ratio(ours_rps, rps.get("peer")),
        "ours/json_minimal": _ratio(ours_rps, rps.get("json_minimal")),
        "ours/ours_format1": _ratio(ours_rps, rps.get("ours_format1")),
        "ours/mongo_raw_bson_ceiling": _ratio(ours_rps, ceiling.get("mongo_raw_bson")),
        "ours/lower_ceiling": _ratio(ours_rps, min(limits) if limits else None),
        # The ceiling is the best of 3 runs, ours one run: against the median run too.
        "ours/mongo_ceiling_median_run": _ratio(ours_rps, _median_run(result)),
        "ours_single/naive_batched": _ratio(rps.get("ours_single"), rps.get("naive_batched")),
        "ours_single/peer": _ratio(rps.get("ours_single"), rps.get("peer")),
        "ours_single/sqs_ceiling": _ratio(
            rps.get("ours_single"), ceiling.get("sqs_messages_per_s")
        ),
        "send_p99/bson_encode_alone_p99": _ratio(
            (result.get("send_latency_us") or {}).get("p99"),
            (result.get("send_latency_us") or {}).get("bson_encode_alone_p99"),
        ),
    }
    r = result["ratios"]
    latency = result.get("send_latency_us") or {}
    costs = result.get("requests_per_record") or {}
    consumer_cpu = result.get("consumer_cpu_us_per_record") or {}
    producer_cpu = result.get("producer_cpu_us_per_record") or {}
    format1_cost = costs.get("packed_zstd")
    result["targets"] = {
        "vs_naive": _target("ours >= 10x naive", r["ours/naive"], lambda v: v >= 10),
        "vs_naive_batched": _target(
            "ours >= 2x naive_batched", r["ours/naive_batched"], lambda v: v >= 2
        ),
        "vs_peer": _target("ours >= 2x peer", r["ours/peer"], lambda v: v >= 2),
        "vs_ceiling": _target(
            "ours >= 80% of the lower ceiling", r["ours/lower_ceiling"], lambda v: v >= 0.8
        ),
        "overhead": _target(
            "overhead <= 15 us CPU per record", result.get("overhead_us_per_record"),
            lambda v: v <= 15,
        ),
        "cost": _target(
            "packed zstd <= 0.02 requests per record", costs.get("packed_zstd"),
            lambda v: v <= 0.02,
        ),
        "latency": _target("send() p99 <= 30 us, paced", latency.get("p99"), lambda v: v <= 30),
        "consumer_cpu": _target(
            "format 2: ingest run <= 10 us CPU per record", consumer_cpu.get("format2"),
            lambda v: v <= 10,
        ),
        "producer_cpu": _target(
            "format 2: producer <= 10 us CPU per record", producer_cpu.get("format2"),
            lambda v: v <= 10,
        ),
        "vs_raw_bson_ceiling": _target(
            "ours >= 90% of a raw-BSON insert_many ceiling", r["ours/mongo_raw_bson_ceiling"],
            lambda v: v >= 0.9,
        ),
        "vs_json_minimal": _target(
            "ours >= 1.5x a minimal JSON consumer", r["ours/json_minimal"], lambda v: v >= 1.5
        ),
        "single_vs_naive_batched": _target(
            "ours_single >= 1.2x naive_batched", r["ours_single/naive_batched"],
            lambda v: v >= 1.2,
        ),
        "single_vs_sqs_ceiling": _target(
            "ours_single >= 85% of the one-record SQS ceiling", r["ours_single/sqs_ceiling"],
            lambda v: v >= 0.85,
        ),
        "format2_cost": _target(
            "format 2 requests per record <= format 1 with zstd", costs.get("format2_zstd"),
            lambda v: format1_cost is not None and v <= format1_cost,
        ),
    }  # fmt: skip


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key].update(value)
        else:
            into[key] = value


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=ROOT, check=True)  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _meta(quick: bool, sizes: Sizes, documents: list[dict[str, Any]]) -> dict[str, Any]:
    lines = record_lines(documents[:1000])
    return {
        "quick": quick,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "servers": "ElasticMQ 1.7.1 (SQS), FerretDB 1.24.2 on PostgreSQL 15 (MongoDB)",
        "sizes": sizes.__dict__,
        "record_bytes": round(sum(map(len, lines)) / len(lines), 1),
    }


def selected(only: str | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    names: list[str] = []
    for name in (n.strip() for n in only.split(",") if n.strip()):
        if name not in SCENARIOS and name not in GROUPS:
            choices = ", ".join([*SCENARIOS, *GROUPS])
            raise click.BadParameter(f"unknown scenario {name!r}; choose from {choices}")
        names += GROUPS.get(name, (name,))
    return [n for n in SCENARIOS if n in names]


@click.command()
@click.option("--quick", is_flag=True, help="Small sizes: the whole suite in about 3 minutes")
@click.option("--only", help="Comma-separated scenarios to run (others kept from latest.json)")
def main(quick: bool, only: str | None) -> None:
    """Run the benchmarks; write latest.json, docs/performance.md and docs/performance.png."""
    names = selected(only)
    sizes = Sizes.of(quick)
    documents = generate(max(sizes.slow, sizes.single, sizes.fast))
    result: dict[str, Any] = json.loads(RESULTS.read_text()) if only and RESULTS.exists() else {}
    result["meta"] = _meta(quick, sizes, documents)
    result["ran"] = []  # scenarios measured in this run (the rest came from latest.json)
    started = time.monotonic()
    for name in names:
        began = time.monotonic()
        click.echo(f"[bench] {name} ...", err=True)
        _merge(result, SCENARIOS[name](sizes, documents, result))
        result["ran"].append(name)
        click.echo(f"[bench] {name} done in {time.monotonic() - began:.1f}s", err=True)
    result["meta"]["seconds"] = round(time.monotonic() - started, 1)
    judge(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report.write(result, MARKDOWN, CHART)
    click.echo(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
