"""The operator tools behind the CLI: backfill, dead letters, status, init, check.
They speak only the two seams."""
