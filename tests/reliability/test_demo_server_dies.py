"""`python -m scripts.demo` whose SQS server dies mid-run (a private ElasticMQ,
SIGKILLed once the demo's queue holds messages): the demo says so in one line naming
the endpoint, exits 1 within a bounded time, and prints no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from pymongo import MongoClient

from tests.support.harness import wait_until
from tests.support.servers import PrivateElasticMQ

ROOT = Path(__file__).resolve().parents[2]
# From the kill to the demo's exit: 5 s to call the server dead, then the web app,
# the producer (5 s to journal what is left) and the consumer (15 s) are stopped.
ENDS_WITHIN_SECONDS = 60


def _queued(client: Any) -> int:
    try:
        urls = client.list_queues(QueueNamePrefix="demo-").get("QueueUrls", [])
        total = 0
        for url in urls:
            attrs = client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            total += int(attrs["ApproximateNumberOfMessages"])
        return total
    except Exception:
        return 0


def test_demo_whose_sqs_dies_says_so_in_one_line(tmp_path: Path, mongo_uri: str) -> None:
    with PrivateElasticMQ(tmp_path / "sqs") as server:
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL_SQS": server.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "INGEST_MONGO_URI": mongo_uri,
        }
        env.pop("DEMO_KEEP", None)
        demo = subprocess.Popen(
            [sys.executable, "-m", "scripts.demo", "--records", "200000", "--threads", "2"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        client = boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        try:
            mid_run = wait_until(lambda: demo.poll() is not None or _queued(client) > 0, 120)
            assert mid_run and demo.poll() is None, (
                f"the demo ended before its server was killed: {demo.communicate()}"
            )
            server.kill()
            killed = time.monotonic()
            out, err = demo.communicate(timeout=ENDS_WITHIN_SECONDS + 30)
            took = time.monotonic() - killed
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.communicate()

    assert demo.returncode == 1, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert 1 <= len(lines) <= 3, err
    assert f"the SQS server at {server.endpoint} stopped answering" in lines[-1], err
    assert took < ENDS_WITHIN_SECONDS, f"the demo took {took:.1f}s to end after its server died"
    assert out == ""  # no summary: it did not finish

    # It tidied what it could: its database (MongoDB still answers) is gone.
    named = re.search(r"database (demo_[0-9a-f]+)", err)
    assert named, err
    mongo: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        assert named.group(1) not in mongo.list_database_names()
    finally:
        mongo.close()
