"""``compile`` of the anomaly app's density flows: when it is on, bad values, and (slow) a
compiled CATHODE sideband flow trained through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowctl.apps.anomaly import AUTO_COMPILE_MIN_STEPS, _compile_density, _compile_setting
from flowctl.apps.common import UserError
from flowctl.data.synth.lhco import write_all
from tests.conftest import run_flowctl


def _cfg(value: object, epochs: int = 100, batch: int = 256, device: str = "cpu") -> dict:
    return {"compile": value, "trainer": {"epochs": epochs, "batch_size": batch,
                                          "device": device}}


def test_auto_compiles_long_cpu_trainings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowctl.training.compiled_loss.has_cxx", lambda: True)
    n_long = AUTO_COMPILE_MIN_STEPS * 256 // 100      # 100 epochs of this many steps each
    assert _compile_density(_cfg("auto"), n_long)
    assert not _compile_density(_cfg("auto"), n_long - 256 * 2)   # one step per epoch short
    assert not _compile_density(_cfg("auto", epochs=20, batch=1024), 250_000)  # the CPU preset
    assert not _compile_density(_cfg("auto", device="cuda"), n_long)
    assert _compile_density(_cfg(True), 10) and not _compile_density(_cfg(False), 10**9)
    assert not _compile_density({"trainer": {"epochs": 100, "batch_size": 1}}, 10**9)  # absent
    monkeypatch.setattr("flowctl.training.compiled_loss.has_cxx", lambda: False)
    assert not _compile_density(_cfg("auto"), 10**9)  # no C++ compiler: eager


def test_bad_compile_value_is_refused() -> None:
    for bad in ("yes", 1, None):
        with pytest.raises(UserError, match="compile="):
            _compile_setting({"compile": bad})


def test_bad_compile_value_stops_the_cli_before_training(tmp_path: Path) -> None:
    files = write_all(tmp_path / "lhco", 3000, signal_fraction=0.01, seed=1)
    res = run_flowctl(["train", "config=cathode_tiny", "run_dir=run", f"data.path={files['data']}",
                       "compile=sometimes"], tmp_path)
    assert res.returncode == 2
    assert "compile='sometimes'" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_compiled_sideband_flow_trains(tmp_path: Path) -> None:
    """compile=true: the sideband flow trains with the compiled loss (~1-2 min of compiling)
    and the run records it."""
    files = write_all(tmp_path / "lhco", 20_000, signal_fraction=0.004, seed=3)
    data = [f"data.{k}={files[v]}" for k, v in
            (("path", "data"), ("extra_bkg", "extra_bkg"), ("extra_sig", "extra_sig"))]
    res = run_flowctl(["train", "config=cathode_tiny", "run_dir=run", *data, "compile=true",
                       "trainer.epochs=2", "trainer.keep_best=2", "ensemble=2"], tmp_path,
                      timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    train = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]
    assert train["sideband_flow"]["compiled"] is True
    assert train["sideband_flow"]["best_val_nll"] is not None
