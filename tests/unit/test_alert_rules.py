"""docker/prometheus-rules.yml, checked without Prometheus: it parses, Prometheus
loads it and compose mounts it, every alert is complete, and every consumer metric
an expression uses is one the consumer exports."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from ingest.metrics import Metrics
from tests.support.metrics import exposed_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docker" / "prometheus-rules.yml"
PROMETHEUS = ROOT / "docker" / "prometheus.yml"
SEVERITIES = {"info", "warning", "critical"}
_DURATION = re.compile(r"^(\d+[smhdwy])+$")


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text())
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    assert rules and all("alert" in rule for rule in rules)
    return rules


def test_every_alert_has_expr_for_severity_and_summary(alerts: list[dict[str, Any]]) -> None:
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)), "alert names repeat"
    for alert in alerts:
        name = alert["alert"]
        assert isinstance(alert.get("expr"), str) and alert["expr"].strip(), f"{name}: no expr"
        assert _DURATION.match(str(alert.get("for", ""))), f"{name}: no `for` duration"
        assert alert.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
        assert alert.get("annotations", {}).get("summary"), f"{name}: no summary"


def test_alerts_use_only_metrics_the_consumer_exports(alerts: list[dict[str, Any]]) -> None:
    exported = exposed_names(generate_latest(Metrics().registry).decode())
    used = set()
    for alert in alerts:
        for metric in re.findall(r"\b(ingest_[a-z0-9_]+)\b", alert["expr"]):
            used.add(metric)
            assert metric in exported, (
                f"{alert['alert']}: {metric} is not a metric the consumer exports"
            )
    assert len(used) >= 5  # the check looked at the expressions


def test_the_alerts_the_operators_need_are_there(alerts: list[dict[str, Any]]) -> None:
    exprs = {a["alert"]: " ".join(a["expr"].split()) for a in alerts}
    assert any("ingest_dead_letter_messages" in e and "> 0" in e for e in exprs.values())
    assert any(re.search(r'\bup\{job="ingest-consumer"\} == 0', e) for e in exprs.values())
    assert any("ingest_sink_breaker_open" in e for e in exprs.values())  # not ready
    assert any("ingest_queue_wait_seconds_bucket" in e for e in exprs.values())
    scraped = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"][0]["job_name"]
    assert scraped == "ingest-consumer"


def test_prometheus_loads_the_rules_and_compose_mounts_them() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (rule_file,) = config["rule_files"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["prometheus"]["volumes"]
    )
    config_in_container = PurePosixPath(mounts["./docker/prometheus.yml"])
    # A relative rule file is read beside the configuration, in the container and here.
    in_container = config_in_container.parent / rule_file
    assert mounts.get("./docker/prometheus-rules.yml") == str(in_container)
    assert (PROMETHEUS.parent / rule_file).resolve() == RULES


def test_security_doc_points_at_the_dead_letter_alert(alerts: list[dict[str, Any]]) -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    assert "docker/prometheus-rules.yml" in text
    named = set(re.findall(r"`(Ingest\w+)`", text))
    assert named and named <= {a["alert"] for a in alerts}


def test_every_alert_has_a_firing_and_a_quiet_promtool_case(alerts: list[dict[str, Any]]) -> None:
    """docker/prometheus-rules.test.yml (promtool test rules, run by make container-check):
    one case where each alert fires with its labels and annotations, one where it stays quiet."""
    tests = yaml.safe_load((ROOT / "docker" / "prometheus-rules.test.yml").read_text())
    assert tests["rule_files"] == [RULES.name]  # beside it: the file under test
    cases = {a["alert"]: {"firing": 0, "quiet": 0} for a in alerts}
    for test in tests["tests"]:
        for case in test["alert_rule_test"]:
            assert case["alertname"] in cases, f"a case for an unknown alert: {case['alertname']}"
            expected = case["exp_alerts"]
            cases[case["alertname"]]["firing" if expected else "quiet"] += 1
            for alert in expected:
                assert alert["exp_labels"]["severity"] and alert["exp_annotations"]["summary"]
    missing = {name: kinds for name, kinds in cases.items() if 0 in kinds.values()}
    assert not missing, f"alerts without a firing and a quiet case: {missing}"
