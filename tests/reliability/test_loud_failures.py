"""Bad values exit 2 naming the key before any work; non-finite results never pass as success."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowctl.cli import main


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    got = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("flowctl:")]
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("override", "key"), [
    ("trainer.lr=inf", "trainer.lr"),
    ("trainer.lr=nan", "trainer.lr"),
    ("trainer.lr=0", "trainer.lr"),
    ("trainer.lr=-1e-3", "trainer.lr"),
    ("trainer.epochs=-1", "trainer.epochs"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("trainer.grad_clip=inf", "trainer.grad_clip"),
    ("data.n_val=-5", "data.n_val"),
    ("data.n_train=1", "data.n_train"),
    ("seed=-3", "seed"),
    ("flow.tail_bound=inf", "flow.tail_bound"),
])
def test_out_of_range_values_exit_2_naming_the_key(override: str, key: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    line = _fails(capsys, ["train", "config=quickstart_tiny", f"run_dir={run}", override], 2)
    assert key in line, line
    assert not (run / "checkpoints").exists()  # refused before any work


def test_calo_energy_trainer_checked_before_anything(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """CaloFlow's Flow I trainer is a ``*_trainer`` group: checked before Flow I trains."""
    line = _fails(capsys, ["train", "config=caloflow_teacher_tiny", f"run_dir={tmp_path / 'r'}",
                           "data.path=none.h5", "energy_trainer.lr=inf"], 2)
    assert "energy_trainer.lr" in line


def _nan_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return model.log_prob(batch[0]).mean() * float("nan")


def test_all_nan_run_fails_and_is_not_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "outputs" / "quickstart_tiny" / "good"
    assert main(["train", "config=quickstart_tiny", f"run_dir={good}"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("flowctl.apps.density._nll_loss", _nan_loss)
    bad = tmp_path / "outputs" / "quickstart_tiny" / "zz_bad"
    line = _fails(capsys, ["train", "config=quickstart_tiny", f"run_dir={bad}",
                           "trainer.nonfinite.max_restores=100"], 1)
    assert "training failed: no optimizer step was taken" in line, line
    assert not (bad / "checkpoints" / "best.pt").exists()
    assert not (bad / ".complete").exists() and (bad / "config.yaml").exists()
    assert main(["sample", "config=quickstart_tiny", "n=50"]) == 0  # picks the good run
    assert (good / "samples.h5").exists() and not (bad / "samples.h5").exists()


def test_no_finite_validation_loss_fails(tmp_path: Path) -> None:
    """Training steps are finite but validation never is: no best.pt, a TrainingError."""
    from torch.utils.data import TensorDataset

    from flowctl.training import TrainingError, train

    model = torch.nn.Linear(2, 1)

    def loss(m: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out = m(batch[0]).pow(2).mean()
        return out if m.training else out * float("nan")

    x = TensorDataset(torch.randn(64, 2))
    with pytest.raises(TrainingError, match="no epoch reached a finite val_loss"):
        train(model, loss, x, x, {"epochs": 2, "batch_size": 16, "device": "cpu"}, tmp_path)
    assert not (tmp_path / "checkpoints" / "best.pt").exists()


def test_failed_resume_keeps_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "config=quickstart_tiny", f"run_dir={run}"]) == 0
    before = (run / "config.yaml").read_bytes()
    monkeypatch.setattr("flowctl.apps.density._nll_loss", _nan_loss)
    _fails(capsys, ["train", "config=quickstart_tiny", f"run_dir={run}", "trainer.resume=true",
                    "trainer.epochs=4", "trainer.lr=0.5"], 1)
    assert (run / "config.yaml").read_bytes() == before
    assert (run / ".complete").exists()  # the earlier, finished training still stands


def test_nan_weights_sample_refuses(tiny_run: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("samples.h5", ".lock"))
    ck = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    for t in ck["model"].values():
        if t.is_floating_point():
            t.fill_(float("nan"))
    torch.save(ck, run / "checkpoints" / "best.pt")
    line = _fails(capsys, ["sample", f"run={run}", "n=100"], 1)
    assert "100 of 100 rows are NaN or inf" in line and str(run) in line
    assert not (run / "samples.h5").exists()


def test_constant_column_and_single_row(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=500), np.full(500, 3.0), rng.normal(size=500)]
    np.savetxt(tmp_path / "t.csv", x, delimiter=",")
    line = _fails(capsys, ["train", "config=density", f"run_dir={tmp_path / 'r'}",
                           f"data.path={tmp_path / 't.csv'}", "trainer.epochs=1"], 2)
    assert "column(s) 1 (= 3)" in line and "constant" in line
    np.savetxt(tmp_path / "one.csv", x[:1], delimiter=",")
    line = _fails(capsys, ["train", "config=density", f"run_dir={tmp_path / 'r1'}",
                           f"data.path={tmp_path / 'one.csv'}", "trainer.epochs=1"], 2)
    assert "one.csv: the table has 1 row(s); at least 3 are needed" in line


def test_metrics_json_is_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flowctl.apps.common import update_metrics_json

    update_metrics_json(tmp_path, {"train": {"loss": 1.0}})
    update_metrics_json(tmp_path, {"evaluate": {"kl": math.nan, "nll": np.float64(np.inf),
                                                "curve": [1.0, -math.inf]}})

    def reject(token: str) -> None:
        raise ValueError(f"non-strict JSON token {token}")

    data = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=reject)
    ev = data["evaluate"]
    assert ev["kl"] is None and ev["nll"] is None and ev["curve"] == [1.0, None]
    assert ev["nonfinite"] == {"kl": "nan", "nll": "inf", "curve[1]": "-inf"}
    assert data["train"] == {"loss": 1.0}


def test_corrupt_metrics_json_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flowctl.apps.common import update_metrics_json

    (tmp_path / "metrics.json").write_text('{"train": {"loss": 1.0}, "eval')
    update_metrics_json(tmp_path, {"sample": {"n": 5}})
    assert "not valid JSON" in capsys.readouterr().err
    assert (tmp_path / "metrics.json.corrupt").read_text().startswith('{"train"')
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"sample": {"n": 5}}
