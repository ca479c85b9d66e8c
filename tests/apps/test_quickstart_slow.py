"""The default quickstart reaches its target (slow: ~1 min; run with `pytest -m slow`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_flowctl


@pytest.mark.slow
def test_quickstart_reaches_kl_target(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    res = run_flowctl(["train", "config=quickstart", f"run_dir={tmp_path / 'q'}"], tmp_path,
                      timeout=600)
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr
    res = run_flowctl(["evaluate", f"run={tmp_path / 'q'}"], tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr
    ev = json.loads((tmp_path / "q" / "metrics.json").read_text())["evaluate"]
    print(f"quickstart: train wall {wall:.1f} s, KL {ev['kl']:.4f} ± {ev['kl_se']:.4f} nats")
    assert ev["kl"] <= 0.02
    assert wall < 120
