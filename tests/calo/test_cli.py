"""CaloFlow end to end through the CLI on tiny settings: data -> train -> sample -> evaluate ->
classify, and distil a student from the tiny teacher."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from flowctl.data.synth.__main__ import main as make_data
from tests.conftest import run_flowctl

SMALL = ["data.max_showers=500", "trainer.epochs=1", "energy_trainer.epochs=1",
         "classifier.epochs=3", "classifier.bootstrap=10", "classifier.hidden=[32]"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    cwd = tmp_path_factory.mktemp("calo")
    assert make_data(["--out", str(cwd / "data"), "--n", "900", "--particles", "eplus"]) == 0
    with h5py.File(cwd / "data" / "eplus_train.h5") as f:
        assert f["layer_0"].shape == (630, 3, 96)
    res = run_flowctl(["train", "config=caloflow_teacher_tiny", "run_dir=run",
                       f"data.path={cwd / 'data' / 'eplus.h5'}", *SMALL], cwd, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return cwd, cwd / "run"


@pytest.mark.slow
def test_train_sample_evaluate_classify(teacher: tuple[Path, Path]) -> None:
    cwd, run = teacher
    assert (run / "checkpoints" / "best.pt").exists()
    assert (run / "energy" / "checkpoints" / "best.pt").exists()
    res = run_flowctl(["sample", f"run={run}", "n=200", "sample.batch=100"], cwd, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ms per shower" in res.stdout
    with h5py.File(run / "samples.h5") as f:  # readable as CaloGAN
        assert f["energy"].shape == (200, 1) and f["layer_2"].shape == (200, 12, 6)
        for k in ("layer_0", "layer_1", "layer_2"):  # CaloFlow's 10 keV output threshold
            v = f[k][:]
            assert not ((v > 0) & (v < 1e-2)).any() and (v >= 0).all()
    res = run_flowctl(["sample", f"run={run}", "n=10", "preprocessing.threshold_mev=-1"], cwd)
    assert res.returncode == 2 and "preprocessing.threshold_mev=-1" in res.stderr
    res = run_flowctl(["evaluate", f"run={run}", "eval.n_truth=200"], cwd, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((run / "metrics.json").read_text())
    ev = m["evaluate"]
    assert 0.5 <= ev["classifier"]["unnormalized"]["auc"] <= 1.0
    assert "E_tot/E_inc" in ev["separation_power"]
    for p in ("average_shower.png", "features.png", "roc.png"):
        assert (run / "plots" / p).exists()
    assert m["sample"]["ms_per_shower"] > 0
    res = run_flowctl(["classify", f"run={run}", "classifier.variants=[normalized]",
                       f"truth={cwd / 'data' / 'eplus_test.h5'}"], cwd, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "AUC" in res.stdout
    with h5py.File(run / "classifier_weights.h5") as f:
        assert f["normalized"].shape == (200,)


@pytest.mark.slow
def test_distill_from_tiny_teacher(teacher: tuple[Path, Path]) -> None:
    cwd, run = teacher
    res = run_flowctl(["train", "config=caloflow_student_tiny", f"teacher={run}",
                       "run_dir=student", f"data.path={cwd / 'data' / 'eplus.h5'}",
                       "data.max_showers=300", "trainer.epochs=1"], cwd, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "KL(student||teacher)" in res.stdout
    m = json.loads((cwd / "student" / "metrics.json").read_text())
    assert m["distill"]["best_epoch"] == 1
    res = run_flowctl(["sample", f"run={cwd / 'student'}", "n=100", "sample.batch=100"], cwd,
                      timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with h5py.File(cwd / "student" / "samples.h5") as f:
        assert f["layer_0"].shape == (100, 3, 96)
    # the student-vs-teacher diagnostics of benchmarks/calo_student.py on these runs
    from benchmarks.calo_student_diagnostics import init_kl, nonzero_fractions, same_z

    kl = init_kl(run, n=100)
    assert set(kl) == {"inverse", "forward"} and all(v > -1.0 for v in kl.values())
    d = same_z(run, cwd / "student", n=100)
    assert list(d["layers"]) == ["0", "1", "2"]
    for lay in d["layers"].values():
        assert 0 <= lay["teacher_empty_student_not"] <= lay["empty_teacher"] <= 1
    nz = nonzero_fractions(run, [cwd / "student"])
    assert list(nz) == ["truth", "student"] and all(len(v) == 3 for v in nz.values())
    assert all(0 < f < 1 for f in nz["truth"])


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    res = run_flowctl(["train", "config=caloflow_teacher_tiny", "run_dir=r",
                       f"data.path={tmp_path / 'missing.h5'}"], tmp_path)
    assert res.returncode == 2 and "missing.h5: no such file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run_flowctl(["train", "config=caloflow_student_tiny", "run_dir=s",
                       f"teacher={tmp_path}"], tmp_path)
    assert res.returncode == 2 and "is not a trained run" in res.stderr
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("energy", data=[[10.0]])
    res = run_flowctl(["train", "config=caloflow_teacher_tiny", "run_dir=b",
                       f"data.path={bad}"], tmp_path)
    assert res.returncode == 2 and "missing key 'layer_0'" in res.stderr
