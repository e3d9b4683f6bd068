"""`make reliability`: the fault, bad-input, fuzz and security tests at full size
(RELIABILITY_FULL=1), then a short soak; prints one JSON summary line at the end:
{"faults", "sent", "lost", "duplicates", "bad_inputs", "crashes", "soak_memory_growth_pct", ...}
Exits non-zero when a test fails or the soak does."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SUITE = [
    "tests/integration/test_consumer_kill.py",
    "tests/integration/test_bad_input_e2e.py",
    "tests/reliability",
    "tests/unit/test_bad_input.py",
    "tests/unit/test_wire_fuzz.py",
]
KEYS = ("faults", "sent", "lost", "duplicates", "bad_inputs", "crashes", "stop_timeouts")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--soak-minutes", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="quick sizes (as in make test)")
    args = parser.parse_args()
    summary_file = Path(tempfile.mkstemp(prefix="reliability-", suffix=".jsonl")[1])
    env = {**os.environ, "RELIABILITY_SUMMARY": str(summary_file)}
    if not args.quick:
        env["RELIABILITY_FULL"] = "1"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
              "-o", "timeout=1200", *SUITE]  # fmt: skip
    tests = subprocess.run(pytest, env=env, check=False)
    totals = dict.fromkeys(KEYS, 0)
    for line in summary_file.read_text().splitlines():
        for key, value in json.loads(line).items():
            totals[key] = totals.get(key, 0) + value
    summary_file.unlink()
    soak = subprocess.run(
        [sys.executable, "-m", "scripts.soak", "--minutes", str(args.soak_minutes)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    sys.stderr.write(soak.stderr[-2000:])
    report = json.loads(soak.stdout.strip().splitlines()[-1]) if soak.stdout.strip() else {}
    totals["soak_memory_growth_pct"] = report.get("soak_memory_growth_pct")
    totals["soak"] = report
    totals["tests_passed"] = tests.returncode == 0
    print(json.dumps(totals))
    return 0 if tests.returncode == 0 and soak.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
