"""The checks of `make container-check` (scripts/container_check.sh builds the images and runs
them through this module). Every container uses the host's network and binds 127.0.0.1.

  image     the consumer image against the local stack (scripts/stack.sh): `ingest check`,
            20,000 records drained, HEALTHCHECK healthy, uid 10001 with --read-only,
            `docker stop` mid-drain losing nothing, two containers sharing the write ceiling
  compose   docker-compose.yml + docker-compose.local.yml up: the init job, both consumers
            healthy, the demo producer's records landed once each, Prometheus scraping both,
            every PromQL expression of the Grafana dashboard answered with data; then down -v
  summary   the figures both wrote (and the shell script's), as one table

A failed check ends with one line naming what failed, and exit code 1."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from producer import Producer

ROOT = Path(__file__).resolve().parent.parent
APP_IMAGE = "sqs-mongo-ingest:0.1.0"
LABEL = "ingest-container-check"  # on every container the image check starts (for cleanup)
PROJECT = "ingest-container-check"  # the compose project
RECORDS = 20_000
# The two containers' ceiling (records/s), under what FerretDB here writes (about 2,000/s);
# the burst lets bulks of 100 through (the default, 2% of a second's worth, makes bulks of 10
# per replica, and FerretDB then writes fewer than the ceiling).
CEILING = 1000
BURST = 200
WINDOW = 5.0  # seconds the written rate is measured over, both containers writing
GRACE = 40  # docker stop's grace period: docker-compose.yml's stop_grace_period
UID = "10001"
RULES = ROOT / "docker" / "prometheus-rules.yml"
RULE_TESTS = ROOT / "docker" / "prometheus-rules.test.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "ingest.json"
STACK_VARIABLES = ("AWS_ENDPOINT_URL_SQS", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                   "AWS_SECRET_ACCESS_KEY", "INGEST_MONGO_URI")  # fmt: skip
T = TypeVar("T")


class CheckFailed(Exception):
    """One line: what failed."""


def say(text: str) -> None:
    print(f"[container-check] {text}", file=sys.stderr, flush=True)


@dataclass
class Figures:
    path: Path

    def add(self, name: str, value: object, unit: str = "") -> None:
        say(f"figure: {name} = {value}{' ' + unit if unit else ''}")
        with self.path.open("a") as out:
            out.write(json.dumps({"name": name, "value": str(value), "unit": unit}) + "\n")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.25) -> T:
    """probe()'s first truthy answer; CheckFailed naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def docker(*args: str, check: bool = True, timeout: float = 120, **kw: Any) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and done.returncode:
        raise CheckFailed(f"docker {' '.join(args[:3])} ...: {done.stderr.strip()[-300:]}")
    return str(done.stdout).strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def metric(port: int, name: str) -> float | None:
    """The sum of one metric's samples in a consumer's /metrics (None: no answer)."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return None
    families = text_string_to_metric_families(body.decode())
    return sum(s.value for f in families for s in f.samples if s.name == name)


def sqs() -> Any:
    return boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"])


def queue_held(client: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(found[n]) for n in names)


def produce(queue_url: str, records: int, collection: str = "events") -> None:
    """Records of about 400 bytes that compress as real ones do (about half): some 240 to a
    message, so the messages spread over the replicas (a repeated pad would put thousands
    in one message)."""
    with tempfile.TemporaryDirectory() as journal:
        producer = Producer(queue_url, journal_dir=journal)
        for n in range(records):
            pad = secrets.token_hex(150)
            producer.send(collection, {"n": n, "user": f"user-{n % 97}", "pad": pad})
        producer.close(timeout=60)
        stats = producer.stats()
    if stats.sent != records:
        raise CheckFailed(f"the producer sent {stats.sent} of {records} records: {stats}")


# ---------------------------------------------------------------- the image


@dataclass
class ImageRun:
    figures: Figures
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    mongo: Any = field(init=False)
    sqs: Any = field(init=False)
    queues: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.mongo = MongoClient(os.environ["INGEST_MONGO_URI"], serverSelectionTimeoutMS=5000)
        self.sqs = sqs()

    def env(self, database: str, queue_url: str = "", **extra: str) -> list[str]:
        values = {v: os.environ[v] for v in STACK_VARIABLES}
        values |= {"INGEST_DATABASE": database, "INGEST_QUEUE_URL": queue_url, **extra}
        return [arg for key, value in values.items() if value for arg in ("-e", f"{key}={value}")]

    def run(self, *args: str, env: list[str], detach: str = "") -> str:
        """docker run of the image on the host's network, root filesystem read-only."""
        where = ["-d", "--name", detach] if detach else ["--rm"]
        return docker("run", *where, "--label", LABEL, "--network", "host", "--read-only",
                      *env, APP_IMAGE, *args)  # fmt: skip

    def provision(self, name: str) -> tuple[str, str]:
        """A queue (and its dead-letter queue) made by `ingest init` in the container, and
        `ingest check` there: (queue URL, database)."""
        database = f"container_check_{name}_{self.stamp}"
        out = self.run("init", "--queue-name", f"container-check-{name}-{self.stamp}",
                       env=self.env(database))  # fmt: skip
        made = json.loads(out.splitlines()[-1])
        queue_url = made["queue_url"]
        self.queues += [queue_url, made.get("dead_letter_url") or ""]
        self.databases.append(database)
        checked = subprocess.run(
            ["docker", "run", "--rm", "--network", "host", "--read-only",
             *self.env(database, queue_url), APP_IMAGE, "check"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if checked.returncode != 0:
            raise CheckFailed(f"ingest check exited {checked.returncode}: {checked.stdout}")
        return queue_url, database

    def start(self, name: str, queue_url: str, database: str, port: int, **extra: str) -> None:
        env = self.env(database, queue_url, INGEST_METRICS_HOST="127.0.0.1",
                       INGEST_METRICS_PORT=str(port), **extra)  # fmt: skip
        self.run("run", env=env, detach=name)

    def count(self, database: str) -> int:
        return int(self.mongo[database]["events"].count_documents({}))

    def drained(self, database: str, queue_url: str, records: int) -> bool:
        return self.count(database) == records and queue_held(self.sqs, queue_url) == 0

    def cleanup(self) -> None:
        ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).split()
        if ids:
            docker("rm", "-f", *ids, check=False)
        for database in self.databases:
            self.mongo.drop_database(database)
        for url in filter(None, self.queues):
            with contextlib.suppress(Exception):
                self.sqs.delete_queue(QueueUrl=url)


def _is(read: Callable[[], float | None], value: float) -> bool:
    return read() == value


def health(name: str) -> str:
    return docker("inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}", name)


def exit_code(name: str) -> int:
    return int(docker("inspect", "-f", "{{.State.ExitCode}}", name))


def check_one_container(run: ImageRun) -> None:
    """`ingest check`, then one read-only container drains 20,000 records exactly."""
    queue_url, database = run.provision("one")
    run.figures.add("ingest check in the container", "exit 0")
    produce(queue_url, RECORDS)
    port = free_port()
    started = time.monotonic()
    run.start("ingest-check-one", queue_url, database, port)
    user = docker("exec", "ingest-check-one", "id", "-u")
    if user != UID:
        raise CheckFailed(f"the consumer runs as uid {user}, not {UID}")
    if docker("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", "ingest-check-one") != "true":
        raise CheckFailed("the container's root filesystem is not read-only")
    wait_for("/readyz 200", lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60)
    ready = time.monotonic() - started
    wait_for("HEALTHCHECK healthy", lambda: health("ingest-check-one") == "healthy", 90)
    healthy = time.monotonic() - started
    run.figures.add("container start to ready (/readyz 200)", f"{ready:.1f}", "s")
    run.figures.add("container start to healthy (HEALTHCHECK, every 10 s)", f"{healthy:.1f}", "s")
    run.figures.add("user, root filesystem", f"uid {user}, --read-only")
    wait_for("20,000 records written", lambda: run.drained(database, queue_url, RECORDS), 300, 1)
    drained = time.monotonic() - started
    written = run.count(database)
    run.figures.add("records drained by one container", f"{written} of {RECORDS}")
    run.figures.add("one container, start to drained", f"{drained:.1f}", "s")
    docker("stop", "-t", str(GRACE), "ingest-check-one", timeout=GRACE + 30)


def check_ceiling_and_stop(run: ImageRun) -> None:
    """Two containers under one ceiling: the written rate stays under it and each gets a
    share; one is stopped mid-drain and the other finishes: nothing lost."""
    queue_url, database = run.provision("pair")
    ports = {"ingest-check-a": free_port(), "ingest-check-b": free_port()}
    for name, port in ports.items():
        run.start(name, queue_url, database, port,
                  INGEST_MAX_WRITE_RATE=str(CEILING), INGEST_WRITE_BURST=str(BURST))  # fmt: skip
    for name, port in ports.items():
        replicas = functools.partial(metric, port, "ingest_live_replicas")
        wait_for(f"{name} sees 2 replicas", functools.partial(_is, replicas, 2.0), 60)
    produce(queue_url, RECORDS)
    # Past the first bulks, which the buckets' bursts let through at once.
    wait_for("the first writes", lambda: run.count(database) > 2 * BURST, 60)

    # The replicas' own count of records MongoDB acknowledged: read in milliseconds, where
    # a count of the collection on FerretDB under this load can take seconds.
    def written() -> dict[str, float]:
        return {n: metric(p, "ingest_records_written_total") or 0.0 for n, p in ports.items()}

    t0, before = time.monotonic(), written()
    time.sleep(WINDOW)  # both replicas write through it
    t1, after = time.monotonic(), written()
    shares = {n: after[n] - before[n] for n in ports}
    rate = sum(shares.values()) / (t1 - t0)
    run.figures.add(
        f"two containers under a {CEILING}/s ceiling, written", f"{rate:.0f}", "records/s"
    )
    run.figures.add(f"each replica's share of those {WINDOW:.0f} s",
                    ", ".join(f"{n[-1]}: {v:.0f}" for n, v in shares.items()))  # fmt: skip
    if rate > CEILING * 1.02 + BURST / WINDOW:  # a full bucket may add one burst
        raise CheckFailed(f"written {rate:.0f} records/s over the ceiling of {CEILING}")
    # Each replica's token bucket is its share of the ceiling; SQS decides which replica
    # receives which message, so the records each writes follow the messages it holds.
    ceilings = [metric(p, "ingest_write_ceiling_records_per_second") for p in ports.values()]
    run.figures.add(
        "each replica's ceiling", " + ".join(f"{c:.0f}" for c in ceilings if c is not None)
    )
    total = sum(shares.values())
    if ceilings != [CEILING / 2, CEILING / 2] or min(shares.values()) < 0.1 * total:
        raise CheckFailed(f"the replicas did not share the ceiling: {ceilings}, wrote {shares}")
    if sum(after.values()) >= RECORDS:
        raise CheckFailed("the queue was drained before docker stop: nothing to lose")
    stopped = time.monotonic()
    docker("stop", "-t", str(GRACE), "ingest-check-a", timeout=GRACE + 30)
    seconds = time.monotonic() - stopped
    code = exit_code("ingest-check-a")
    run.figures.add("docker stop mid-drain", f"exit {code} after {seconds:.1f} s (grace {GRACE} s)")
    if code != 0 or seconds > GRACE / 2:
        raise CheckFailed(f"docker stop: exit code {code} after {seconds:.1f} s")
    wait_for("the other container drains the rest",
             lambda: run.drained(database, queue_url, RECORDS), 300, 1)  # fmt: skip
    run.figures.add("records after the stop", f"{run.count(database)} of {RECORDS}, queue empty")


def image_checks(figures: Figures) -> None:
    run = ImageRun(figures)
    try:
        check_one_container(run)
        check_ceiling_and_stop(run)
    finally:
        run.cleanup()


# ---------------------------------------------------------------- the compose stack


# docker-compose.local.yml's port variables: free ones, clear of the local stack's.
PORTS = ("LOCAL_SQS_PORT", "LOCAL_MONGO_PORT", "PROMETHEUS_PORT",
         "LOCAL_METRICS_PORT_1", "LOCAL_METRICS_PORT_2")  # fmt: skip
# Every long-running service of the compose stack (init runs once and exits).
SERVICES = ("mongodb", "elasticmq", "consumer", "consumer-2", "demo-producer", "prometheus")


@dataclass
class Compose:
    ports: dict[str, int] = field(default_factory=lambda: {n: free_port() for n in PORTS})

    def __call__(self, *args: str, timeout: float = 300) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INGEST_"))}
        env |= {k: str(v) for k, v in self.ports.items()}
        files = ["-f", "docker-compose.yml", "-f", "docker-compose.local.yml"]
        return docker("compose", "-p", PROJECT, *files, *args, cwd=ROOT, env=env, timeout=timeout)

    @property
    def sqs_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['LOCAL_SQS_PORT']}"

    @property
    def queue_url(self) -> str:
        return f"{self.sqs_url}/000000000000/ingest-records"

    def sqs(self) -> Any:
        return boto3.client("sqs", endpoint_url=self.sqs_url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip

    def mongo(self) -> Any:
        uri = f"mongodb://127.0.0.1:{self.ports['LOCAL_MONGO_PORT']}/"
        return MongoClient(uri, serverSelectionTimeoutMS=5000)["ingest"]

    def states(self) -> dict[str, dict[str, Any]]:
        lines = self("ps", "-a", "--format", "json").splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        rows = [row for item in found for row in (item if isinstance(item, list) else [item])]
        return {row["Service"]: row for row in rows}

    def query(self, expr: str) -> list[dict[str, Any]]:
        port = self.ports["PROMETHEUS_PORT"]
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        if status != 200:
            raise CheckFailed(f"Prometheus answered {status} to {expr!r}: {body[:200]!r}")
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result


def all_healthy(compose: Compose) -> bool:
    states = compose.states()
    init = states.get("init")
    if init and init["State"] == "exited" and init["ExitCode"] != 0:
        raise CheckFailed(f"the init job exited {init['ExitCode']}: {compose('logs', 'init')}")
    for name in SERVICES:
        state = states.get(name, {})
        if state.get("State") == "exited":
            raise CheckFailed(f"{name} exited: {compose('logs', name)[-400:]}")
    return bool(init and init["State"] == "exited") and all(
        states.get(name, {}).get("Health") == "healthy" for name in SERVICES
    )


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels if p["type"] != "row" for t in p["targets"]]


def has_data(result: list[dict[str, Any]]) -> bool:
    """A query has data when it answers a series whose value is a number (not NaN:
    a histogram that observed nothing, or 0/0)."""
    return any(not math.isnan(float(r["value"][1])) for r in result)


def feed_the_dashboard(compose: Compose) -> None:
    """What the demo producer never sends: a bad message (dead-lettered with a reason)
    and a conflicting duplicate (the same _id with other content)."""
    client = compose.sqs()
    client.send_message(QueueUrl=compose.queue_url, MessageBody="not a record")
    with tempfile.TemporaryDirectory() as journal:
        producer = Producer(compose.queue_url, journal_dir=journal, sqs_client=client)
        producer.send("checks", {"_id": "twice", "n": 1})
        producer.send("checks", {"_id": "twice", "n": 2})
        producer.close(timeout=30)


def check_dashboard(compose: Compose, figures: Figures) -> None:
    exprs = dashboard_queries()

    def empty() -> list[str]:
        return [e for e in exprs if not has_data(compose.query(e))]

    with contextlib.suppress(CheckFailed):
        wait_for("every dashboard query has data", lambda: not empty(), 120, 2)
    missing = empty()
    answered = len(exprs) - len(missing)
    figures.add("dashboard queries with data (Prometheus 2.42)", f"{answered} of {len(exprs)}")
    if missing:
        raise CheckFailed(f"dashboard queries without data: {missing}")


def producer_sent(compose: Compose) -> int:
    """The demo producer's last line after it stopped: its stats as JSON."""
    lines = compose("logs", "--no-log-prefix", "demo-producer").splitlines()
    final = [line for line in lines if "stopped:" in line]
    if not final:
        raise CheckFailed("the demo producer logged no final line")
    stats = json.loads(final[-1].split("stopped:", 1)[1])
    if stats["accepted"] != stats["sent"]:
        raise CheckFailed(f"the demo producer did not send all it accepted: {stats}")
    return int(stats["sent"])


def compose_checks(figures: Figures) -> None:
    compose = Compose()
    compose("down", "-v", "--remove-orphans")  # what an interrupted run may have left
    before = engine_objects()
    started = time.monotonic()
    compose("up", "-d")
    wait_for("every compose service healthy (init done)", lambda: all_healthy(compose), 240, 1)
    figures.add("compose up to all healthy", f"{time.monotonic() - started:.1f}", "s")
    figures.add("init job", "exit 0 (queue and dead-letter queue made)")

    def scraped() -> bool:
        up = compose.query('up{job="ingest-consumer"}')
        return sorted(float(r["value"][1]) for r in up) == [1.0, 1.0]

    wait_for("Prometheus scrapes both consumers", scraped, 60, 1)
    figures.add("Prometheus targets up", "2 of 2 consumers")
    feed_the_dashboard(compose)
    check_dashboard(compose, figures)

    compose("stop", "demo-producer", timeout=60)
    sent = producer_sent(compose)
    db = compose.mongo()
    wait_for("the demo producer's records landed",
             lambda: db["operations"].count_documents({}) >= sent, 120, 1)  # fmt: skip
    landed = db["operations"].count_documents({})
    figures.add("records landed through compose", f"{landed} of {sent} sent")
    if landed != sent:
        raise CheckFailed(f"{landed} documents for {sent} records sent")
    compose_down(compose, before, figures)


def engine_objects() -> dict[str, set[str]]:
    """Every container, volume and network the engine has."""
    return {
        "containers": set(docker("ps", "-aq", "--no-trunc").split()),
        "volumes": set(docker("volume", "ls", "-q").split()),
        "networks": set(docker("network", "ls", "-q", "--no-trunc").split()),
    }


def compose_down(compose: Compose | None = None, before: dict[str, set[str]] | None = None,
                 figures: Figures | None = None) -> None:  # fmt: skip
    """down -v; with `before` (the engine's objects before up), nothing may be left."""
    (compose or Compose())("down", "-v", "--remove-orphans", timeout=180)
    if before is None:
        return
    left = {kind: ids - before[kind] for kind, ids in engine_objects().items()}
    if any(left.values()):
        raise CheckFailed(f"compose down -v left {left}")
    if figures:
        figures.add("compose down -v leaves", "0 containers, 0 volumes, 0 networks")


# ---------------------------------------------------------------- rules, stack, summary


def rule_cases() -> dict[str, tuple[int, int]]:
    """Alert name -> (firing cases, quiet cases) in docker/prometheus-rules.test.yml."""
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    cases = dict.fromkeys(alerts, (0, 0))
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            firing, quiet = cases.get(case["alertname"], (0, 0))
            if case.get("exp_alerts"):
                firing += 1
            else:
                quiet += 1
            cases[case["alertname"]] = (firing, quiet)
    return cases


def stack_answers() -> bool:
    try:
        sqs().list_queues()
        client: Any = MongoClient(os.environ["INGEST_MONGO_URI"], serverSelectionTimeoutMS=3000)
        client.admin.command("ping")
    except Exception:
        return False
    return True


def summary(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    width = max(len(r["name"]) for r in rows)
    print("\ncontainer-check figures")
    for row in rows:
        print(f"  {row['name']:<{width}}  {row['value']}{' ' + row['unit'] if row['unit'] else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["image", "compose", "compose-down", "summary",
                                         "rule-cases", "stack-answers"])  # fmt: skip
    parser.add_argument("--results", type=Path, help="the figures file (JSON lines)")
    args = parser.parse_args(argv)
    figures = Figures(args.results or Path(os.devnull))
    try:
        if args.what == "image":
            image_checks(figures)
        elif args.what == "compose":
            compose_checks(figures)
        elif args.what == "compose-down":
            compose_down()
        elif args.what == "summary":
            summary(figures.path)
        elif args.what == "rule-cases":
            cases = rule_cases()
            incomplete = {a: c for a, c in cases.items() if 0 in c}
            if incomplete:
                raise CheckFailed(f"alerts without a firing and a quiet case: {incomplete}")
            firing = sum(c[0] for c in cases.values())
            quiet = sum(c[1] for c in cases.values())
            print(f"{len(cases)} alerts, {firing} firing and {quiet} quiet cases")
        elif args.what == "stack-answers":
            return 0 if stack_answers() else 1
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        return 1
    except Exception as exc:  # a server or the engine failing under the check: one line too
        say(f"FAILED ({args.what}): {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
