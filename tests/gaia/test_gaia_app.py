"""Gaia ANODE app: windows, errors, and `flowctl train/evaluate config=gaia_anode_tiny` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from flowctl.apps.common import UserError, read_config
from flowctl.apps.gaia import Window, evaluate, features_for, load_data, train, windows
from flowctl.data.synth.gaia import main as make_patch
from flowctl.data.table import DataError
from tests.conftest import run_flowctl


def test_windows_from_scan_and_centers() -> None:
    ws = windows({"sr_width": 2.0, "sb_width": 1.5, "scan": {"start": -3, "stop": 1, "step": 1}})
    assert [w.center for w in ws] == [-3.0, -2.0, -1.0, 0.0, 1.0]
    assert [w.name for w in ws][:2] == ["w00", "w01"]
    ws = windows({"centers": [-12.5], "sr_width": 2.0, "sb_width": 2.0})
    w = ws[0]
    mu = np.array([-12.5, -11.6, -11.5, -13.4, -10.0, -9.4, -15.6, -14.6])
    assert w.sr(mu).tolist() == [True, True, False, True, False, False, False, False]
    assert w.sideband(mu).tolist() == [False, False, True, False, True, False, False, True]
    np.testing.assert_allclose(w.context(mu)[:, 0], (mu + 12.5) / 3.0, rtol=1e-6)
    assert features_for("pmlam") == ["phi", "lam", "pmphi", "bp_rp", "g"]
    assert features_for("pmphi")[2] == "pmlam"


@pytest.mark.parametrize("anode, match", [
    ({"scan": None}, "centers"),
    ({"scan": {"start": 0, "stop": -1, "step": 1}}, "stop >= start"),
    ({"centers": [0.0], "sr_width": 0.0}, "sr_width"),
    ({"centers": []}, "empty"),
])
def test_window_errors(anode: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        windows(anode)
    with pytest.raises(UserError, match="pmlam, pmphi"):
        features_for("pmra")
    assert isinstance(Window(0, 0.0, 1.0, 1.0).name, str)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cwd = tmp_path_factory.mktemp("gaia_cli")
    assert make_patch(["--out", str(cwd / "data"), "--name", "tiny", "--n-field", "30000",
                       "--n-stream", "300"]) == 0
    data = cwd / "data" / "tiny.h5"
    res = run_flowctl(["train", "config=gaia_anode_tiny", f"data.path={data}"], cwd, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 of 3 windows" in res.stdout
    runs = list((cwd / "outputs" / "gaia_anode_tiny").iterdir())
    assert len(runs) == 1
    return cwd, runs[0]


def test_train_evaluate_newest_run(tiny: tuple[Path, Path]) -> None:
    cwd, run = tiny
    assert (run / "checkpoints" / "best.pt").exists() and (run / "checkpoints" / "last.pt").exists()
    assert (run / "windows" / "w01" / "inner" / "metrics.jsonl").exists()
    res = run_flowctl(["evaluate", "config=gaia_anode_tiny"], cwd, timeout=300)  # newest run
    assert res.returncode == 0, res.stderr[-2000:]
    assert "top-100 purity" in res.stdout
    m = json.loads((run / "metrics.json").read_text())
    tr, ev = m["train"], m["evaluate"]
    assert tr["n_windows"] == 3 and tr["features"] == ["phi", "lam", "pmphi", "bp_rp", "g"]
    for k in ("purity_top50", "purity_top100", "recall_top50", "recall_top100",
              "random_purity", "n_stream_fiducial", "per_window", "n_scored"):
        assert k in ev, k
    assert 0.0 < ev["random_purity"] < 0.5
    # ANODE must beat picking SR stars at random by a wide margin
    assert ev["purity_top100"] > 2 * ev["random_purity"]
    assert ev["purity_top100"] > 0.3
    assert 0 < ev["recall_top100"] <= 1 and ev["recall_top50"] <= ev["recall_top100"]
    # the line search finds the stream's track among the top stars of its window
    best = ev["hough"]["best"]
    assert len(ev["hough"]["per_window"]) == 3 and best["z"] > 5 and best["p"] < 0.05
    assert best["purity"] > 0.5 and best["count"] >= 10
    for p in ("score_map.png", "top_stars.png"):
        assert (run / "plots" / p).stat().st_size > 1000
    with h5py.File(run / "scores.h5") as f:
        s, fid = f["log_r"][()], f["fiducial"][()]
        assert s.shape == fid.shape == f["stream"].shape
        top = np.argsort(-np.where(fid, s, -np.inf))[:100]
        assert abs(f["stream"][()][top].mean() - ev["purity_top100"]) < 1e-9
    assert ev["edge_deg"] == 0.5 and ev["min_density_quantile"] == 0.02
    cfg = read_config(run)
    cfg["eval"]["min_density_quantile"] = 1.5
    with pytest.raises(UserError, match=r"min_density_quantile must be in \[0, 1\)"):
        evaluate(cfg, run)
    cfg["eval"]["min_density_quantile"] = 0.02
    cfg["eval"]["smooth_k"] = -1
    with pytest.raises(UserError, match=r"eval.smooth_k must be an integer >= 0"):
        evaluate(cfg, run)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    res = run_flowctl(["train", "config=gaia_anode_tiny", f"data.path={tmp_path / 'no.csv'}"],
                      tmp_path)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and "no.csv" in line and "not found" in line


def test_app_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("ra,dec,pmra,pmdec,parallax,phot_g_mean_mag\n1,2,3,4,5,6\n")
    with pytest.raises(DataError, match=r"bad\.csv: missing Gaia column\(s\) bp_rp"):
        load_data({"path": str(bad)})
    with pytest.raises(UserError, match="data.path is required"):
        load_data({"path": None})
    cfg = {"data": {"path": str(bad)}, "anode": {"condition": "pmra"},
           "flow": {"kind": "maf", "features": 5, "context": 1}, "trainer": {}}
    with pytest.raises(UserError, match="anode.condition must be one of pmlam, pmphi"):
        train(cfg, tmp_path / "run")
    with pytest.raises(UserError, match="no checkpoint"):
        evaluate({"data": {"path": str(bad)}, "anode": {"centers": [0.0]},
                  "flow": {"kind": "maf"}}, tmp_path)


def test_preselection_g_and_color(tmp_path: Path) -> None:
    assert make_patch(["--out", str(tmp_path), "--name", "p", "--n-field", "3000",
                       "--n-stream", "100", "--seed", "3"]) == 0
    path = str(tmp_path / "p.h5")
    full = load_data({"path": path})
    sel = load_data({"path": path, "g_max": 20.2, "color": [0.5, 1.0]})
    keep = (full["g"] < 20.2) & (full["bp_rp"] >= 0.5) & (full["bp_rp"] <= 1.0)
    assert 0 < len(sel) == int(keep.sum()) < len(full)
    assert np.array_equal(np.sort(sel["g"]), np.sort(full["g"][keep]))
    assert int(sel.labels.sum()) == int(full.labels[keep].sum())
    with pytest.raises(UserError, match=r"data.color must be \[lo, hi\]"):
        load_data({"path": path, "color": 0.5})
    with pytest.raises(UserError, match="lo < hi"):
        load_data({"path": path, "color": [1.0, 0.5]})
    with pytest.raises(UserError, match="no star .* passes the preselection"):
        load_data({"path": path, "color": [5.0, 6.0]})
