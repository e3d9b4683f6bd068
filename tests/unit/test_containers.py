"""The container files, checked without a Docker engine: the compose file parses,
every image is pinned, every long-running service has a health check, the
consumer gets its environment, the Dockerfile is multi-stage, non-root, probed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "ingest.json"
# name:tag with a version-like tag (digits and dots, maybe a v and a suffix), or a digest.
PINNED = re.compile(r"^[\w./-]+:v?\d+(\.\d+)+[\w.-]*$|@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict) and services
    return services


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        image = service.get("image")
        assert image, f"{name} has no image"
        assert PINNED.search(image), f"{name}: image {image!r} is not pinned to a version"
        assert not image.endswith(":latest")
    images = {s["image"].split(":")[0] for s in _services(compose).values()}
    assert {
        "mongo",
        "softwaremill/elasticmq-native",
        "prom/prometheus",
        "grafana/grafana",
    } <= images
    assert _services(compose)["mongodb"]["image"].startswith("mongo:8.0.")


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        if service.get("restart") == "no":  # one-shot jobs (init) exit; nothing to probe
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def test_consumer_environment_and_replicas(compose: dict[str, Any]) -> None:
    consumer = _services(compose)["consumer"]
    env = consumer["environment"]
    for name in (
        "INGEST_QUEUE_URL",
        "INGEST_MONGO_URI",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_DEFAULT_REGION",
    ):
        assert env.get(name), f"consumer lacks {name}"
    assert env["INGEST_METRICS_HOST"] == "0.0.0.0"
    assert consumer["deploy"]["replicas"] == 2
    assert "/healthz" in " ".join(consumer["healthcheck"]["test"])
    assert _services(compose)["init"]["command"][0] == "init"
    assert consumer["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_the_consumers_and_grafana_is_provisioned(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["dns_sd_configs"][0]["names"] == ["consumer"]
    assert job["dns_sd_configs"][0]["port"] == 9108
    mounts = " ".join(_services(compose)["grafana"]["volumes"])
    assert "provisioning" in mounts and "dashboards" in mounts
    datasource = yaml.safe_load(
        (ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    used = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert used == {datasource["uid"]}


def test_dockerfile_is_multi_stage_non_root_and_probed() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2 and any(s[1] for s in stages)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1))
    assert "COPY --from=build" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    joined = text.replace("\\\n", " ")  # continuation lines as one
    health = re.search(r"^HEALTHCHECK .*", joined, re.MULTILINE)
    assert health and "/healthz" in health.group(0) and "urllib" in health.group(0)
    assert "curl" not in health.group(0)
    assert re.search(r"INGEST_METRICS_HOST=0\.0\.0\.0", text)


def test_demo_producer_uses_the_producer_library() -> None:
    source = (ROOT / "docker" / "demo_producer.py").read_text()
    assert "from producer import Producer" in source and "DEMO_RATE" in source
    assert "COPY --chown=ingest:ingest docker/demo_producer.py" in DOCKERFILE.read_text()
