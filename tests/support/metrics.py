"""Reading a consumer's /metrics as the tests need it."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
             "gauge": ("",), "summary": ("_sum", "_count", "")}  # fmt: skip


def exposed_names(text: str) -> set[str]:
    """Sample names in /metrics, and for families with no samples yet (a labelled
    counter before its first event) the names their type gives them."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def _text(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def scrape(port: int) -> dict[str, float]:
    """Every sample of one read of the consumer's /metrics on 127.0.0.1:`port` (values
    read together are of one moment), by name, a labelled one as `name{label="value"}`
    (labels sorted); {} when the endpoint does not answer."""
    text = _text(port)
    if text is None:
        return {}
    return {
        _key(found.name, found.labels): float(found.value)
        for family in text_string_to_metric_families(text)
        for found in family.samples
    }


def _key(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def sample(port: int, name: str, **labels: str) -> float | None:
    """One sample's value from the consumer's /metrics on 127.0.0.1:`port`; None when
    the endpoint does not answer or has no such sample."""
    text = _text(port)
    if text is None:
        return None
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None
