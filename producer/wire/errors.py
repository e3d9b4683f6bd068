"""The format's own errors, so that it stands alone: importing it loads no other part
of the producer."""

from __future__ import annotations


class WireError(ValueError):
    """A malformed message or record. Its text is the reason the consumer puts on the
    dead-lettered message, written for whoever sent the record."""
