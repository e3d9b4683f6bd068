"""Grouping in order under two limits, as every SQS batch call needs (count and bytes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def bounded_groups(
    items: Iterable[T],
    size_of: Callable[[T], int],
    max_bytes: int,
    max_items: int | None = None,
) -> Iterator[list[T]]:
    """Consecutive groups of at most `max_items` items and `max_bytes` summed size.
    An item larger than `max_bytes` travels alone rather than being dropped."""
    group: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        full = max_items is not None and len(group) >= max_items
        if group and (full or size + item_size > max_bytes):
            yield group
            group, size = [], 0
        group.append(item)
        size += item_size
    if group:
        yield group
