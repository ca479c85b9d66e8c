"""Run ``python -m flowctl ARGS`` from the repository root, appending its output to a log file
(shared by the benchmark drivers that go through the CLI)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def flowctl(args: list[str], log: Path) -> float:
    """Run one flowctl command; returns its wall time in seconds. A non-zero exit stops the
    driver with one line naming the command and the log."""
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"$ flowctl {' '.join(args)}\n")
        fh.flush()
        res = subprocess.run([sys.executable, "-m", "flowctl", *args], cwd=REPO, stdout=fh,
                             stderr=subprocess.STDOUT, check=False)
    if res.returncode != 0:
        raise SystemExit(f"flowctl {' '.join(args)} failed (exit {res.returncode}); see {log}")
    return time.perf_counter() - t0
