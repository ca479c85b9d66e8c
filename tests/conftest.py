"""Shared fixtures for the CLI, data, apps and metrics tests: run `flowctl` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def flowctl_env(**extra: str) -> dict[str, str]:
    """Environment for a `python -m flowctl` subprocess that imports this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    env.pop("FLOWCTL_DEBUG", None)
    env.update(extra)
    return env


def run_flowctl(args: list[str], cwd: Path, timeout: float = 120,
                **env: str) -> subprocess.CompletedProcess:
    """Run ``python -m flowctl ARGS`` in ``cwd``; returns the completed process (text)."""
    return subprocess.run([sys.executable, "-m", "flowctl", *args], cwd=cwd,
                          env=flowctl_env(**env), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained quickstart_tiny run shared by the tests that only read a run."""
    cwd = tmp_path_factory.mktemp("tiny")
    run_dir = cwd / "run"
    res = run_flowctl(["train", "config=quickstart_tiny", f"run_dir={run_dir}"], cwd)
    assert res.returncode == 0, res.stderr
    return run_dir
