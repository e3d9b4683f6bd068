"""The format stands alone: the consumer and other tools import it without the web
app's machinery (its buffer, sender thread, exit and fork hooks)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import atexit, json, sys
before = atexit._ncallbacks()
import producer.wire
from producer.wire import classify_sqs_error, decode_message, encode_record
decode_message(encode_record("c", {"_id": 1}))
classify_sqs_error("ThrottlingException", 400)
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.split(".")[0] == "producer"),
    "atexit": atexit._ncallbacks() - before,
    "aws": sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore")),
}))
"""


def test_importing_the_format_loads_no_other_producer_module_and_no_hooks() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found["atexit"] == 0
    assert found["aws"] == []  # the SQS error rule is plain code and status
    assert all(m == "producer" or m.startswith("producer.wire") for m in found["modules"]), found
    assert "producer.wire" in found["modules"]


def test_the_format_has_its_own_errors_and_send_raises_the_producers() -> None:
    from producer import ProducerError, RecordRefused, RecordTooLarge, WireError
    from producer.testing import RecordingProducer

    assert not issubclass(WireError, ProducerError)  # the format's, standing alone
    assert issubclass(RecordTooLarge, RecordRefused) and issubclass(RecordRefused, WireError)
    with pytest.raises(RecordRefused, match=r"must not contain '\.\.'") as refused:
        RecordingProducer().send("a..b", {"n": 1})
    assert isinstance(refused.value, ProducerError) and isinstance(refused.value, WireError)
