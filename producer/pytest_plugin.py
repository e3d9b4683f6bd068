"""The pytest fixture for code that sends records (loaded by pytest through the
package's entry point; nothing else imports it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import RecordingProducer


@pytest.fixture
def recording_producer() -> Iterator[RecordingProducer]:
    """A RecordingProducer for one test: hand it to the code under test, then assert on
    `.documents(collection)` or `.sent`."""
    with RecordingProducer() as producer:
        yield producer
