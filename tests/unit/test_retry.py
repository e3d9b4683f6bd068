"""Retry by visibility (ingest/flow/retry.py): later each time a message fails, with
jitter below the doubled delay, never past the cap nor SQS's twelve hours."""

from __future__ import annotations

import random

import pytest

from ingest.flow.retry import MAX_VISIBILITY_SECONDS, RetryPolicy


def test_the_delay_doubles_with_each_receive_up_to_the_cap() -> None:
    policy = RetryPolicy(base_seconds=2, max_seconds=60, jitter=0)
    assert [policy.delay(n) for n in range(0, 8)] == [2, 2, 4, 8, 16, 32, 60, 60]
    assert RetryPolicy(0, 0, 0).delay(9) == 0


def test_jitter_only_shortens_the_delay_within_its_share(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(base_seconds=100, max_seconds=1000, jitter=0.2)
    monkeypatch.setattr(random, "random", lambda: 0.999999)
    assert policy.delay(1) == 80  # 100 less almost a fifth
    monkeypatch.setattr(random, "random", lambda: 0.0)
    assert policy.delay(1) == 100


def test_never_past_sqs_twelve_hours_however_many_receives() -> None:
    policy = RetryPolicy(base_seconds=2, max_seconds=10**9, jitter=0)
    assert policy.delay(10_000) == MAX_VISIBILITY_SECONDS == 43200
