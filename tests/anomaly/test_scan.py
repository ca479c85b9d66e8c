"""The injection-scan table, and the scan driver on a tiny setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowctl.anomaly.scan import scan_table
from flowctl.data.synth.lhco import write_all
from tests.conftest import flowctl_env

REPO = Path(__file__).resolve().parents[2]


def test_scan_table_medians_bands_and_significance() -> None:
    recs = [{"method": "cathode", "n_sig": n, "seed": s, "max_sic": float(n // 100 + s),
             "auc": 0.6, "s_over_b": n / 1e5, "s_over_sqrt_b": n / 300.0}
            for n in (300, 3000) for s in range(5)]
    recs.append({"method": "cwola", "n_sig": 300, "seed": 0, "max_sic": None,
                 "s_over_b": 0.003, "s_over_sqrt_b": 1.0})
    t = scan_table(recs)
    assert [r["n_sig"] for r in t["cathode"]] == [3000, 300]        # most signal first
    top = t["cathode"][0]
    assert top["seeds"] == [0, 1, 2, 3, 4] and top["max_sic"]["median"] == 32.0
    assert top["max_sic"]["q16"] == pytest.approx(30.64) and top["max_sic"]["n"] == 5
    assert top["significance_after_cut"]["median"] == pytest.approx(32.0 * 10.0)
    cw = t["cwola"][0]
    assert cw["max_sic"]["n"] == 0 and cw["significance_after_cut"]["n"] == 0


@pytest.mark.slow
def test_scan_driver_on_a_tiny_setting(tmp_path: Path) -> None:
    files = write_all(tmp_path / "d", 30_000, signal_fraction=0.004, seed=1, n_extra_bkg=1,
                      n_extra_sig=1)
    fast = ["trainer.epochs=2", "trainer.keep_best=2", "ensemble=2", "sample.n=5000",
            "classifier.epochs=3", "classifier.top_k=2", "classifier.layers=[16,16]"]
    cmd = [sys.executable, str(REPO / "benchmarks" / "anomaly_scan.py"), "--data",
           str(files["data"]), "--tag", "t", "--config", "tiny", "--preset", "none",
           "--n-sig", "120", "40", "--seeds", "0", "1", "--out", str(tmp_path / "o"),
           "--results", str(tmp_path / "r"), "--extra", *fast]
    res = subprocess.run(cmd, cwd=REPO, env=flowctl_env(), capture_output=True, text=True,
                         timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads((tmp_path / "r" / "anomaly_scan_t.json").read_text())
    assert set(out["table"]) == {"cathode", "anode", "cwola"}
    assert len(out["runs"]) == 12 and (tmp_path / "r" / "anomaly_scan_t.png").exists()
    for rows in out["table"].values():
        assert [r["n_sig"] for r in rows] == [120, 40]
        assert rows[0]["s_over_b"]["median"] > rows[1]["s_over_b"]["median"]
