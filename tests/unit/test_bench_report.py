"""The benchmark's report writer and judge, on a made-up result: no servers, no suite run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.run import judge

FAKE: dict[str, Any] = {
    "meta": {"quick": True, "started": "2025-01-01T00:00:00+00:00", "commit": "abc1234",
             "machine": "2 cores", "servers": "ElasticMQ, FerretDB", "record_bytes": 1037.0},
    "consumer_rps": {"ours": 4000.0, "ours_format1": 3000.0, "ours_single": 1200.0,
                     "json_minimal": 2500.0, "naive_batched": 1500.0, "peer": 1000.0,
                     "naive": 200.0},
    "consumer_detail": {"ours": {"records": 20000, "messages": 386, "seconds": 5.0}},
    "consumer_cpu_us_per_record": {"format1": 150.0, "format2": 60.0},
    "producer_cpu_us_per_record": {"format1": 120.0, "format2": 9.5},
    "ceiling_rps": {"sqs": 25000.0, "mongo": 4500.0, "mongo_raw_bson": 5000.0,
                    "sqs_messages_per_s": 1500.0},
    "overhead_us_per_record": 45.5,
    "requests_per_record": {"single": 1.2, "batched": 0.3, "packed": 0.038, "packed_zstd": 0.011,
                            "format2_zstd": 0.009},
    "send_latency_us": {"p50": 20.0, "p99": 80.0, "p999": 900.0},
    "producer_detail": {"send_latency_us": {"paced": {"p99": 80.0},
                                            "paced_format1": {"p99": 95.0}}},
    "scaling_rps": {"1": 4000.0, "2": 4100.0, "4": 3900.0},
}  # fmt: skip


@pytest.fixture
def result() -> dict[str, Any]:
    judged = copy.deepcopy(FAKE)
    judge(judged)
    return judged


def test_judge_computes_ratios_against_each_baseline(result: dict[str, Any]) -> None:
    ratios = result["ratios"]
    assert ratios["ours/naive"] == 20.0
    assert ratios["ours/naive_batched"] == pytest.approx(2.67)
    assert ratios["ours/peer"] == 4.0
    assert ratios["ours/lower_ceiling"] == pytest.approx(0.89)  # MongoDB is the lower one
    assert ratios["ours/json_minimal"] == 1.6
    assert ratios["ours/mongo_raw_bson_ceiling"] == 0.8


def test_judge_marks_each_target(result: dict[str, Any]) -> None:
    met = {name: target["met"] for name, target in result["targets"].items()}
    assert met == {
        "vs_naive": True, "vs_naive_batched": True, "vs_peer": True, "vs_ceiling": True,
        "overhead": False, "cost": True, "latency": False, "consumer_cpu": False,
        "producer_cpu": True, "vs_raw_bson_ceiling": False, "vs_json_minimal": True,
        "single_vs_naive_batched": False, "single_vs_sqs_ceiling": False, "format2_cost": True,
    }  # fmt: skip


def test_judge_leaves_missing_figures_unmet() -> None:
    partial: dict[str, Any] = {"consumer_rps": {"ours": 100.0}}
    judge(partial)
    assert partial["ratios"]["ours/naive"] is None
    assert not any(target["met"] for target in partial["targets"].values())


def test_markdown_has_a_row_per_consumer_and_the_targets(result: dict[str, Any]) -> None:
    text = report.markdown(result)
    assert "| ours (producer defaults: format 2, zstd) | 4,000 | 20,000 | 386 | 5.00 |" in text
    # Both formats side by side, format 1 first.
    assert "| `ingest run` CPU per record (whole process, µs) | 150 | 60.0 |" in text
    assert "| send() p99, paced at 5,000/s (µs) | 95.0 | 80.0 |" in text
    assert "| billable requests per record (zstd) | 0.0110 | 0.0090 |" in text
    assert "| naive (insert_one, delete each, 1 thread) | 200 |" in text
    assert "| overhead <= 15 us CPU per record | 45.50 | NOT met |" in text
    assert "| ours >= 10x naive | 20.00 | met |" in text
    assert "| packed_zstd | 0.0110 |" in text
    assert "20.0 / 80.0 / 900" in text  # send() p50 / p99 / p99.9
    assert "![throughput per consumer](performance.png)" in text


def test_chart_is_a_png_with_one_bar_per_consumer(result: dict[str, Any], tmp_path: Path) -> None:
    import matplotlib.image

    path = tmp_path / "docs" / "performance.png"
    report.chart(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width > 500 and height > 200


def test_write_produces_both_files(result: dict[str, Any], tmp_path: Path) -> None:
    report.write(result, tmp_path / "performance.md", tmp_path / "performance.png")
    assert (tmp_path / "performance.md").read_text().startswith("# Performance")
    assert (tmp_path / "performance.png").stat().st_size > 1000
