"""Helpers the tests share: no test module imports another, nor the conftest."""

from pathlib import Path

#: The repository's root.
ROOT = Path(__file__).resolve().parents[2]
