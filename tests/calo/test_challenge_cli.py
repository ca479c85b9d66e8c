"""CaloFlow on CaloChallenge-format files through the CLI (DS1 by default; DS2, DS3 and the
students are slow), and the config/data checks that stop a run before Flow I trains."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from flowctl.apps.calo import train, validate
from flowctl.apps.common import UserError, read_config
from flowctl.data.synth.challenge import write
from flowctl.data.table import DataError
from tests.conftest import REPO, run_flowctl

FAST = ["data.max_showers=300", "trainer.epochs=1", "energy_trainer.epochs=1",
        "classifier.epochs=2", "classifier.bootstrap=5", "classifier.hidden=[16]"]


def _cfg(name: str, overrides: list[str] | None = None) -> dict:
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        c = compose(name, overrides=overrides or [])
    return OmegaConf.to_container(c, resolve=True)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def ds1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ds1")
    write(d / "photons.h5", "ds1_photons", 500, seed=0)
    write(d / "pions.h5", "ds1_pions", 500, seed=0)
    return d


def test_ds1_photons_train_sample_evaluate(ds1: Path) -> None:
    """The issue's DS1 chain, in process (the CLI version of it is the slow pions test)."""
    from flowctl.apps.calo import evaluate, sample

    run = ds1 / "run"
    cfg = _cfg("caloflow_ds1_tiny", [f"data.path={ds1 / 'photons.h5'}",
                                     "data.binning=ds1_photons", *FAST])
    train(cfg, run)
    assert (run / "binning.xml").exists()  # the run alone is enough to sample and evaluate
    rcfg = read_config(run)
    sample({**rcfg, "n": 500}, run)
    with h5py.File(run / "samples.h5") as f:
        assert f["showers"].shape == (500, 368) and f["incident_energies"].shape == (500, 1)
        assert f["showers"].dtype == np.float32 and (f["showers"][:] >= 0).all()
        e = f["incident_energies"][:, 0]
    assert set(np.unique(e)) <= set(2.0 ** np.arange(8, 23))  # drawn like the training set
    evaluate(rcfg, run)
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert ev["dataset"] == "1-photons" and ev["min_energy_mev"] == 1.0
    for var in ("low_normed", "high"):
        assert 0.0 <= ev["classifier"][var]["auc"] <= 1.0
    assert {"E_tot/E_inc", "E_12", "EC_eta_1", "width_phi_2", "sparsity_0"} <= \
        set(ev["separation_power"])
    for p in ("average_shower.png", "features.png", "roc.png"):
        assert (run / "plots" / p).exists()


def test_wrong_binning_exits_2_with_one_line(ds1: Path) -> None:
    res = run_flowctl(["train", "config=caloflow_ds1_tiny", f"data.path={ds1 / 'photons.h5'}",
                       "data.binning=ds1_pions", "run_dir=bad"], ds1)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "368" in lines[0] and "533" in lines[0]
    assert "photons.h5" in lines[0] and "ds1_pions.xml" in lines[0]
    assert not (ds1 / "bad" / "energy").exists()


@pytest.mark.parametrize("override,match", [
    ("preprocessing.noise_mev=-1", "preprocessing.noise_mev=-1"),
    ("preprocessing.u0_scale=0", "preprocessing.u0_scale=0"),
    ("preprocessing.e_ref_gev=nan", "preprocessing.e_ref_gev=nan"),
    ("trainer.lr=-1", "trainer.lr"),
    ("energy_trainer.epochs=0", "energy_trainer"),
    ("first_trainer.batch_size=0", "first_trainer"),
    ("milestone_epochs=[0]", "milestone_epochs"),
    ("data.split=[0.5,0.6]", "data.split"),
    ("data.max_showers=1", "data.max_showers=1"),
    ("n=0", "n=0"),
    ("sample.batch=0", "sample.batch=0"),
    ("eval.n_samples=5", "eval.n_samples=5"),
    ("eval.min_energy_mev=-1", "eval.min_energy_mev"),
    ("distill.beta=2", "distill.beta=2"),
    ("classifier.lr=0", "classifier.lr"),
    ("classifier.variants=[foo]", "classifier.variants"),
    ("model=big", "model must be"),
    ("data.e_sampling=x", "data.e_sampling"),
])
def test_every_setting_is_checked(override: str, match: str) -> None:
    cfg = _cfg("caloflow_ds2_tiny", [override])
    with pytest.raises(UserError, match=match.replace("[", r"\[")):
        validate(cfg)


def test_degenerate_data_stops_before_training(tmp_path: Path) -> None:
    one = tmp_path / "one.h5"
    with h5py.File(one, "w") as f:
        f.create_dataset("incident_energies", data=[[1000.0]])
        f.create_dataset("showers", data=np.ones((1, 368)))
    cfg = _cfg("caloflow_ds1_tiny", [f"data.path={one}"])
    with pytest.raises(UserError, match=r"one.h5: 1 shower\(s\)"):
        train(cfg, tmp_path / "r1")
    empty = write(tmp_path / "e.h5", "ds1_photons", 40)
    with h5py.File(empty, "r+") as f:
        s = f["showers"][:]
        s[:, 363:] = 0.0  # layer 12 empty everywhere
        f["showers"][...] = s
    cfg = _cfg("caloflow_ds1_tiny", [f"data.path={empty}"])
    with pytest.raises(UserError, match=r"layer\(s\) \[12\] hold no energy"):
        train(cfg, tmp_path / "r2")
    assert not (tmp_path / "r2" / "energy").exists()
    cfg = _cfg("caloflow_ds1_tiny", [f"data.path={empty}", "data.binning=ds2"])
    with pytest.raises(DataError, match="368 voxels per shower"):
        train(cfg, tmp_path / "r3")
    good = write(tmp_path / "g.h5", "ds1_photons", 40)
    cfg = _cfg("caloflow_ds1_tiny", [f"data.path={good}", "energy_flow.features=3"])
    with pytest.raises(UserError, match="energy_flow.features=3 but the data gives 5"):
        train(cfg, tmp_path / "r4")
    assert not (tmp_path / "r4" / "energy").exists()


@pytest.mark.slow
def test_ds1_pions_energies_file_and_student(ds1: Path) -> None:
    res = run_flowctl(["train", "config=caloflow_ds1_tiny", f"data.path={ds1 / 'pions.h5'}",
                       "data.binning=ds1_pions", "run_dir=pions", *FAST], ds1, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    run = ds1 / "pions"
    res = run_flowctl(["sample", f"run={run}", f"energies={ds1 / 'photons.h5'}"], ds1,
                      timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with h5py.File(run / "samples.h5") as f, h5py.File(ds1 / "photons.h5") as g:
        assert f["showers"].shape == (500, 533)
        assert np.allclose(f["incident_energies"][:], g["incident_energies"][:])
    res = run_flowctl(["evaluate", f"run={run}"], ds1, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads((run / "metrics.json").read_text())["evaluate"]
    assert ev["dataset"] == "1-pions" and "E_14" in ev["separation_power"]
    assert set(ev["classifier"]) == {"low_normed", "high"}
    res = run_flowctl(["distill", f"run={run}", "student.trainer.epochs=1"], ds1, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "KL(student||teacher)" in res.stdout
    res = run_flowctl(["sample", f"run={run / 'student'}", "n=200"], ds1, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with h5py.File(run / "student" / "samples.h5") as f:
        assert f["showers"].shape == (200, 533)


@pytest.mark.slow
@pytest.mark.parametrize("name,n,n_sample", [("ds2", 200, 50), ("ds3", 60, 10)])
def test_layerwise_teacher_and_student(tmp_path: Path, name: str, n: int,
                                       n_sample: int) -> None:
    write(tmp_path / f"{name}.h5", name, n, seed=0)
    res = run_flowctl(["train", f"config=caloflow_{name}_tiny", f"data.path={name}.h5",
                       "run_dir=run"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]
    assert m["model"] == "layerwise" and m["n_layers"] == 45
    assert {"energy", "first", "layers"} <= set(m)
    if name == "ds2":  # the MAF teacher samples 144 steps per layer: fine for DS2
        res = run_flowctl(["sample", "run=run", f"n={n_sample}"], tmp_path, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
    res = run_flowctl(["distill", "run=run"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_flowctl(["sample", "run=run/student", f"n={n_sample}"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    v = {"ds2": 6480, "ds3": 40500}[name]
    with h5py.File(tmp_path / "run" / "student" / "samples.h5") as f:
        assert f["showers"].shape == (n_sample, v)
        assert f["incident_energies"].shape == (n_sample, 1)
        assert np.isfinite(f["showers"][:]).all()
