"""One seam per outside system: only the queue seam speaks boto3 to SQS and only the
payload seam to S3, only the sink seam speaks pymongo, and the consumer reaches the
producer only through its format and its public API."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

INGEST = Path(__file__).resolve().parents[2] / "ingest"


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            # `from producer import wire` reaches producer.wire, not the package
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _modules_importing(prefixes: tuple[str, ...]) -> set[str]:
    return {
        str(path.relative_to(INGEST.parent))
        for path in INGEST.rglob("*.py")
        if any(name.split(".")[0] in prefixes for name in _imports(path))
    }


@pytest.mark.parametrize(
    ("libraries", "seams"),
    [
        (("boto3", "botocore"), ("ingest/queues/sqs.py", "ingest/payloads/s3.py")),
        (("mypy_boto3_sqs",), ("ingest/queues/sqs.py",)),
        (("mypy_boto3_s3",), ("ingest/payloads/s3.py",)),
        (("pymongo",), ("ingest/sinks/",)),
    ],
)
def test_only_the_seam_imports_the_client_library(
    libraries: tuple[str, ...], seams: tuple[str, ...]
) -> None:
    importing = _modules_importing(libraries)
    assert importing, f"nothing imports {libraries}: the scan is broken"
    assert {m for m in importing if not m.startswith(seams)} == set()
    # Each seam named is one that uses the library (a stale entry would hide a leak).
    assert {seam for seam in seams if any(m.startswith(seam) for m in importing)} == set(seams)


def test_the_consumer_uses_only_the_producers_format_and_public_api() -> None:
    """`producer.wire`, and what `producer` names in its __all__ (backfill is a producer
    of its own: a file into SQS); never a module of the producer's own."""
    import producer

    allowed = {"producer", "producer.wire"} | {f"producer.{name}" for name in producer.__all__}
    reaching_in = {
        f"{path.relative_to(INGEST.parent)}: {name}"
        for path in INGEST.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] == "producer"
        and name not in allowed
        and not name.startswith("producer.wire.")
    }
    assert reaching_in == set()


def test_the_seam_rule_sees_a_reach_into_the_producer(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from producer.journal import Journal\nfrom producer import Producer\n")
    assert list(_imports(planted)) == [
        "producer.journal",
        "producer.journal.Journal",
        "producer",
        "producer.Producer",
    ]
