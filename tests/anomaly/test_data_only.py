"""Data-only mode end to end: a lone R&D-format file (pandas `table` layout, no extra files)
through `flowctl train/sample/classify/evaluate` for CATHODE, ANODE and CWoLa, and the
one-line errors of what cannot run on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowctl.apps import anomaly
from flowctl.apps.common import UserError, read_config
from flowctl.data.lhco import RAW_COLUMNS, load_lhco, read_lhco_raw, write_pandas_fixed
from flowctl.data.synth.lhco import write_all
from tests.conftest import run_flowctl

FAST = ["trainer.epochs=2", "trainer.keep_best=2", "ensemble=2", "sample.n=5000",
        "classifier.epochs=3", "classifier.top_k=2", "classifier.layers=[16,16]",
        "trainer.log_every=1000", "data.extra_bkg=null", "data.extra_sig=null"]


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the features file, written in pandas' `table` layout (the generator's other
    files are deleted)."""
    out = tmp_path_factory.mktemp("lone")
    files = write_all(out, 20_000, signal_fraction=0.005, seed=5, n_extra_bkg=1,
                      n_extra_sig=1, fmt="table")
    files["extra_bkg"].unlink()
    files["extra_sig"].unlink()
    return files["data"]


def _ok(res) -> None:
    assert res.returncode == 0, res.stderr[-2000:]


def _chain(lone: Path, tmp_path: Path, cli_for_all: bool) -> Path:
    """CATHODE train/sample/classify through the CLI; ANODE and CWoLa through the CLI too, or
    in-process on CATHODE's resolved config (same code after the CLI's composition)."""
    data = [f"data.path={lone}", *FAST]
    run = tmp_path / "cathode"
    _ok(run_flowctl(["train", "config=cathode_tiny", "run_dir=cathode", *data], tmp_path,
                    timeout=300))
    _ok(run_flowctl(["sample", f"run={run}"], tmp_path))
    res = run_flowctl(["classify", f"run={run}"], tmp_path)
    _ok(res)
    assert "cathode: out-of-fold (5 folds) AUC" in res.stdout
    cfg = read_config(run)
    for m in ("anode", "cwola"):
        if cli_for_all:
            res = run_flowctl(["train", f"config={m}_tiny", f"run_dir={m}", *data], tmp_path,
                              timeout=300)
            _ok(res)
            assert f"{m}: out-of-fold (5 folds)" in res.stdout
        else:
            (tmp_path / m).mkdir()
            out = anomaly.train({**cfg, "method": m}, tmp_path / m)
            assert out["mode"] == "kfold" and out["kfold"]["k"] == 5
    return run


@pytest.mark.slow
def test_lone_file_all_three_methods_through_the_cli(lone: Path, tmp_path: Path) -> None:
    """The issue's "done when", every step a CLI call (about 80 s on a loaded 2-core box)."""
    run = _chain(lone, tmp_path, cli_for_all=True)
    res = run_flowctl(["evaluate", f"run={run}", f"eval.search=[{tmp_path}]"], tmp_path)
    _ok(res)
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert set(ev["methods"]) == {"cathode", "anode", "cwola"}
    assert all(s["max_sic"]["median"] > 0 for s in ev["methods"].values())


def test_lone_file_cathode_anode_cwola(lone: Path, tmp_path: Path) -> None:
    data = [f"data.path={lone}", *FAST]
    run = _chain(lone, tmp_path, cli_for_all=False)
    cfg = read_config(run)
    anomaly.evaluate({**cfg, "eval": {**cfg["eval"], "search": [str(tmp_path)]}}, run)
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert ev["mode"] == "kfold" and set(ev["methods"]) == {"cathode", "anode", "cwola"}
    for m, s in ev["methods"].items():
        assert 0.0 <= s["auc"]["median"] <= 1.0 and s["max_sic"]["median"] > 0
        assert s["gain_at_fpr0.01"]["n"] == 1
        assert "sb_efficiency_at_fpr0.01" in s
        assert s["max_sic_of_median"] is None and "eval.min_runs=5" in s["note"]
    assert (run / "plots" / "roc_sic.png").exists() and (run / "plots" / "sculpting.png").exists()
    # the background-template check uses the file's own labels here (no extra file)
    tc = ev["template_check"]
    assert tc["truth"].startswith("SR data with label 0") and tc["auc"]["n"] == 1
    assert 0.3 < tc["auc"]["median"] < 1.0

    # scores.npz: every SR event once, with its row in the file, its label and its fold
    x = load_lhco(lone)
    sr = (x[:, 0] > 3.3) & (x[:, 0] < 3.7)
    for m in ("cathode", "anode", "cwola"):
        with np.load(tmp_path / m / "scores.npz") as z:
            assert str(z["mode"]) == "kfold" and int(z["k"]) == 5
            idx = z["index"]
            assert np.array_equal(np.sort(idx), np.flatnonzero(sr))
            np.testing.assert_array_equal(z["labels"], x[idx, 5])
            np.testing.assert_allclose(z["mjj"], x[idx, 0])
            assert np.isfinite(z["scores"]).all() and len(z["sb_scores"]) == len(z["sb_mjj"])
            counts = np.bincount(z["fold"])
            assert len(counts) == 5 and counts.min() >= 0.9 * counts.max()
    assert len(list((tmp_path / "anode" / "inner").glob("fold*/checkpoints/best.pt"))) == 5
    assert len(list((tmp_path / "cathode" / "checkpoints").glob("classifier_fold*.pt"))) == 5

    # what cannot run on data alone says so in one line
    res = run_flowctl(["train", "config=idealized_tiny", "run_dir=ideal", *data], tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "needs labelled simulation" in res.stderr and "data.extra_bkg" in res.stderr

    # in-process, on the same config: degenerate inputs fail before any training
    bad = tmp_path / "const.h5"
    raw = read_lhco_raw(lone)
    raw[:, 3] = raw[:, 10] = 80.0                    # both jet masses: mj1 constant
    write_pandas_fixed(bad, {c: raw[:, j] for j, c in enumerate(RAW_COLUMNS)})
    with pytest.raises(UserError, match="feature mj1 is constant"):
        anomaly.train({**cfg, "data": {**cfg["data"], "path": str(bad)}}, tmp_path / "c")
    assert not (tmp_path / "c" / "config.yaml").exists()
    with pytest.raises(UserError, match=r"SR events .* need at least"):
        anomaly.train({**cfg, "method": "cwola",
                       "data": {**cfg["data"], "max_events": 300}}, tmp_path / "few")
    with pytest.raises(UserError, match="eval.k must be an integer >= 3"):
        anomaly.train({**cfg, "eval": {**cfg["eval"], "k": 2}}, tmp_path / "k2")
