"""The container files, checked without a Docker engine: the compose file parses,
every image is pinned (ElasticMQ to the local stack's version), every long-running
service has a health check and a restart policy, published ports are on loopback only,
the consumer gets its environment, the Dockerfile is multi-stage, runs as a numeric
non-root user and is probed, and .dockerignore keeps local state out of the context.
docker-compose.local.yml (the stand-ins make container-check runs) swaps only the images
that cannot be pulled, and stays clear of the local stack's ports. make container-check
builds and runs all of it for real."""

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
DOCKERIGNORE = ROOT / ".dockerignore"
STACK_SH = ROOT / "scripts" / "stack.sh"
# name:tag with a version-like tag (digits and dots, maybe a v and a suffix), or a digest.
PINNED = re.compile(r"^[\w./-]+:v?\d+(\.\d+)+[\w.-]*$|@sha256:[0-9a-f]{64}$")


LOCAL = ROOT / "docker-compose.local.yml"
# ${NAME:-default}: what compose reads when NAME is not set.
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolated(text: str) -> str:
    """The file as compose reads it with no variable set; every variable needs a default."""
    bare = [m.group(1) for m in _VARIABLE.finditer(text) if m.group(2) is None]
    assert not bare, f"variables without a default: {bare}"
    return _VARIABLE.sub(lambda m: m.group(2), text)


class _ComposeLoader(yaml.SafeLoader):
    """Compose v2's merge tags: !reset (drop the base file's value) and !override."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
    ),
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(interpolated(COMPOSE.read_text()))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def local() -> dict[str, Any]:
    data = yaml.load(interpolated(LOCAL.read_text()), Loader=_ComposeLoader)
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


def test_elasticmq_is_the_version_the_local_stack_runs(compose: dict[str, Any]) -> None:
    stack = re.search(r"^ELASTICMQ_VERSION=(\S+)$", STACK_SH.read_text(), re.MULTILINE)
    assert stack, "scripts/stack.sh names no ELASTICMQ_VERSION"
    image = _services(compose)["elasticmq"]["image"]
    assert image == f"softwaremill/elasticmq-native:{stack.group(1)}"


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        if service.get("restart") == "no":  # one-shot jobs (init) exit; nothing to probe
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def test_long_running_services_restart_and_init_runs_once(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert services["init"]["restart"] == "no"
    for name, service in services.items():
        if name == "init":
            continue
        assert service.get("restart") in ("unless-stopped", "always"), (
            f"{name}: restart policy {service.get('restart')!r}"
        )


def _published(port: str | int | dict[str, Any]) -> tuple[str | None, str]:
    """(host address or None when all interfaces, published port) of one `ports` entry."""
    if isinstance(port, dict):  # long syntax
        return port.get("host_ip"), str(port.get("published"))
    parts = str(port).rsplit(":", 2)
    if len(parts) == 3:
        return parts[0].strip("[]") or None, parts[1]
    if len(parts) == 2:
        return None, parts[0]
    return None, parts[0]  # a container port alone: published on an ephemeral host port


def test_published_ports_listen_on_loopback_only(compose: dict[str, Any]) -> None:
    published: dict[str, list[tuple[str | None, str]]] = {}
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            published.setdefault(name, []).append(_published(port))
    assert set(published) >= {"grafana", "prometheus"}
    for name, entries in published.items():
        for host, port in entries:
            assert host in ("127.0.0.1", "::1"), (
                f"{name} publishes {port} on {host or 'every interface'}"
            )


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
    queries = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["targets"] for p in queries)
    used = {t["datasource"]["uid"] for p in queries for t in p["targets"]}
    assert used == {datasource["uid"]}


def test_dashboard_has_a_peak_shaving_row() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    rows = [i for i, p in enumerate(panels) if p["type"] == "row" and "Peak shaving" in p["title"]]
    assert len(rows) == 1
    below = panels[rows[0] + 1 :]
    shown = " ".join(t["expr"] for p in below if p["type"] != "row" for t in p["targets"])
    for metric in (
        "ingest_write_ceiling_records_per_second",
        "ingest_live_replicas",
        "ingest_pollers_running",
        "ingest_write_gate_wait_seconds_bucket",
        "ingest_write_tokens_granted_total",
        "ingest_records_written_total",
    ):
        assert metric in shown, f"the peak-shaving row does not show {metric}"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_dockerfile_is_multi_stage_non_root_and_probed() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2 and any(s[1] for s in stages)
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1))
    assert "COPY --from=build" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    # Numeric uid:gid: Kubernetes' runAsNonRoot cannot verify a user name.
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]), users
    assert int(users[-1].split(":")[0]) != 0
    assert re.search(rf"useradd .*--uid {users[-1].split(':')[0]}\b", text)
    joined = text.replace("\\\n", " ")  # continuation lines as one
    health = re.search(r"^HEALTHCHECK .*", joined, re.MULTILINE)
    assert health and "/healthz" in health.group(0) and "urllib" in health.group(0)
    assert "curl" not in health.group(0)
    assert re.search(r"INGEST_METRICS_HOST=0\.0\.0\.0", text)


def test_demo_producer_uses_the_producer_library() -> None:
    source = (ROOT / "docker" / "demo_producer.py").read_text()
    assert "from producer import Producer" in source and "DEMO_RATE" in source
    assert "COPY --chown=ingest:ingest docker/demo_producer.py" in DOCKERFILE.read_text()


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus `**`) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]  # a class; [^...] negates in both
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def excluded(path: str, rules: list[str]) -> bool:
    """Whether Docker leaves `path` out of the context: the last matching rule wins, and a
    rule that matches a folder matches everything under it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        regex = _ignore_regex(pattern.strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def _dockerignore_rules() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = ["**/__pycache__", "build", "*.log", "docs", "!docs/keep.md"]
    assert excluded("ingest/__pycache__/cli.cpython-311.pyc", rules)
    assert excluded("__pycache__/x.pyc", rules)
    assert excluded("build/lib/x.py", rules)
    assert not excluded("ingest/build.py", rules)
    assert excluded("a.log", rules) and not excluded("logs/a.log", rules)
    assert excluded("docs/other.md", rules) and not excluded("docs/keep.md", rules)


def test_dockerignore_keeps_local_state_out_and_what_the_image_copies_in() -> None:
    rules = _dockerignore_rules()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".stack/run/elasticmq.pid",
        ".stack/pg/data/PG_VERSION",
        ".mypy_cache/3.11/cache.db",
        ".ruff_cache/CACHEDIR.TAG",
        ".pytest_cache/v/cache/lastfailed",
        ".hypothesis/examples/x",
        "ingest/__pycache__/cli.cpython-311.pyc",
        "producer/__pycache__/core.cpython-311.pyc",
        "sqs_mongo_ingest.egg-info/PKG-INFO",
        "bench/results/latest.json",
        "build/lib/ingest/cli.py",
    ):
        assert excluded(path, rules), f".dockerignore lets {path} into the build context"
    text = DOCKERFILE.read_text()
    copied = [
        source
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.MULTILINE)
        for source in [w for w in line.split() if not w.startswith("--")][:-1]
    ]
    assert {"pyproject.toml", "README.md", "producer", "ingest"} <= set(copied)
    for source in copied:
        for path in [source, *(str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py"))]:
            if "__pycache__" in path:
                continue
            assert not excluded(path, rules), f".dockerignore drops {path}, which the image copies"


def test_published_ports_are_variables_with_the_documented_defaults() -> None:
    text = COMPOSE.read_text()
    for variable, default in (("PROMETHEUS_PORT", "9090"), ("GRAFANA_PORT", "3000")):
        assert f'"127.0.0.1:${{{variable}:-{default}}}:{default}"' in text
        assert f"{variable}=" in text.split("services:")[0], f"the header does not name {variable}"


def test_local_override_swaps_only_the_images_that_cannot_be_pulled(
    compose: dict[str, Any], local: dict[str, Any]
) -> None:
    services = local["services"]
    swapped = {name: s["image"] for name, s in services.items() if "image" in s}
    assert set(swapped) == {"mongodb", "elasticmq", "prometheus"}
    for name, image in swapped.items():
        assert image.startswith("ingest-local/") and services[name]["pull_policy"] == "never"
    assert services["grafana"] == {"profiles": ["grafana"]}  # no Grafana here: left out
    # The consumer's own image, built from docker/Dockerfile: not replaced anywhere.
    ours = {n for n, s in _services(compose).items() if s["image"].startswith("sqs-mongo-ingest")}
    assert ours == {"init", "consumer", "demo-producer"}
    assert not ours & set(swapped)
    assert services["consumer-2"]["extends"] == {
        "file": "docker-compose.yml",
        "service": "consumer",
    }


def test_local_override_uses_the_hosts_loopback_clear_of_the_local_stack(
    local: dict[str, Any],
) -> None:
    stack = STACK_SH.read_text()
    taken = {int(p) for p in re.findall(r"^\w+_PORT=\$\{STACK_\w+:-(\d+)\}", stack, re.MULTILINE)}
    assert {9324, 27017, 54329} <= taken  # and S3 beside them
    running = {n: s for n, s in local["services"].items() if not s.get("profiles")}
    for name, service in running.items():
        assert service["network_mode"] == "host", f"{name} is not on the host's network"
    env = running["consumer"]["environment"]
    ports = {
        "sqs": int(env["AWS_ENDPOINT_URL_SQS"].rsplit(":", 1)[1]),
        "mongo": int(env["INGEST_MONGO_URI"].rstrip("/").rsplit(":", 1)[1]),
        "metrics": int(env["INGEST_METRICS_PORT"]),
        "metrics-2": int(running["consumer-2"]["environment"]["INGEST_METRICS_PORT"]),
    }
    assert not set(ports.values()) & taken, ports
    assert len(set(ports.values())) == len(ports)
    assert env["INGEST_METRICS_HOST"] == "127.0.0.1"
    assert running["mongodb"]["environment"]["FERRETDB_LISTEN"] == f"127.0.0.1:{ports['mongo']}"
    configs = local["configs"]
    sqs_conf = configs["elasticmq-conf"]["content"]
    assert f"bind-port = {ports['sqs']}" in sqs_conf and 'bind-hostname = "127.0.0.1"' in sqs_conf
    scrape = yaml.safe_load(configs["prometheus-conf"]["content"])
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "ingest-consumer"  # the alerts select on it
    assert job["static_configs"][0]["targets"] == [
        f"127.0.0.1:{ports['metrics']}",
        f"127.0.0.1:{ports['metrics-2']}",
    ]
    assert scrape["rule_files"] == ["prometheus-rules.yml"]
    listen = [a for a in running["prometheus"]["command"] if a.startswith("--web.listen-address")]
    assert listen == ["--web.listen-address=127.0.0.1:9090"]


def test_stand_in_images_build_on_the_local_base_and_no_certificate_is_committed() -> None:
    for dockerfile in (ROOT / "docker" / "local").glob("*.Dockerfile"):
        text = dockerfile.read_text()
        assert re.search(r"^ARG BASE_IMAGE$", text, re.MULTILINE), dockerfile.name
        assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.MULTILINE), dockerfile.name
    script = (ROOT / "scripts" / "container_check.sh").read_text()
    assert "--iptables=false --bridge=none" in script
    assert '--build-arg "PYTHON_IMAGE=$BASE_IMAGE"' in script
    for path in ROOT.rglob("*"):
        if ".git" in path.parts or ".venv" in path.parts or ".stack" in path.parts:
            continue
        if path.is_file() and path.suffix in {".crt", ".pem", ".cer", ".key"}:
            pytest.fail(f"a certificate is in the repository: {path}")


def test_the_dashboard_check_counts_only_numbers_as_data() -> None:
    """make container-check asks a real Prometheus for every dashboard query; an empty
    answer or NaN (a histogram that observed nothing, 0/0) is no data."""
    from scripts.container_check import dashboard_queries, has_data

    assert not has_data([])
    assert not has_data([{"metric": {}, "value": [1.0, "NaN"]}])
    assert has_data([{"metric": {}, "value": [1.0, "NaN"]}, {"metric": {}, "value": [1.0, "0"]}])
    exprs = dashboard_queries()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(exprs) == sum(len(p["targets"]) for p in panels if p["type"] != "row") > 20
    assert all("ingest_" in e for e in exprs)
