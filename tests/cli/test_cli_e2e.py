"""End-to-end runs of the `flowctl` command in subprocesses, on tiny settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from tests.conftest import flowctl_env, run_flowctl


def test_train_sample_evaluate(tiny_run: Path) -> None:
    run = tiny_run
    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "checkpoints/best.pt",
                 "checkpoints/last.pt", "plots/loss.png", ".hydra/config.yaml"):
        assert (run / name).exists(), name
    cwd = run.parent
    res = run_flowctl(["sample", f"run={run}", "n=300"], cwd)
    assert res.returncode == 0, res.stderr
    assert "300 samples" in res.stdout
    with h5py.File(run / "samples.h5") as f:
        assert f["samples"].shape == (300, 2)
    res = run_flowctl(["evaluate", f"run={run}"], cwd)
    assert res.returncode == 0, res.stderr
    assert "KL(p||q)" in res.stdout
    m = json.loads((run / "metrics.json").read_text())
    assert set(m) >= {"train", "sample", "evaluate"}
    ev = m["evaluate"]
    assert ev["kl"] > 0 and ev["kl_se"] > 0 and ev["test_nll_se"] > 0
    for p in ("density.png", "samples.png", "loss.png"):
        assert (run / "plots" / p).stat().st_size > 1000
    # no stray Hydra output next to the run
    assert not (cwd / "outputs").exists() and not (cwd / "multirun").exists()


def test_evaluate_table_file(tiny_run: Path, tmp_path: Path) -> None:
    import numpy as np

    x = np.random.default_rng(0).normal(size=(50, 2)).astype("float32")
    np.save(tmp_path / "t.npy", x)
    res = run_flowctl(["evaluate", f"run={tiny_run}", f"data.path={tmp_path / 't.npy'}"],
                      tmp_path)
    assert res.returncode == 0, res.stderr
    assert "50 rows, mean NLL" in res.stdout
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["evaluate_file"]["rows"] == 50
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 3), "float32"))
    res = run_flowctl(["evaluate", f"run={tiny_run}", f"data.path={bad}"], tmp_path)
    assert res.returncode == 2
    assert "3 columns" in res.stderr and "Traceback" not in res.stderr


def test_default_run_dir_and_newest_run(tmp_path: Path) -> None:
    res = run_flowctl(["train", "config=quickstart_tiny", "trainer.epochs=1"], tmp_path)
    assert res.returncode == 0, res.stderr
    runs = list((tmp_path / "outputs" / "quickstart_tiny").iterdir())
    assert len(runs) == 1 and (runs[0] / "config.yaml").exists()
    res = run_flowctl(["sample", "config=quickstart_tiny", "n=20"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (runs[0] / "samples.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]


def test_multirun_two_values(tmp_path: Path) -> None:
    res = run_flowctl(["train", "config=quickstart_tiny", "-m", "flow.transforms=2,3",
                       "trainer.epochs=1", f"run_dir={tmp_path / 'sweep'}"], tmp_path)
    assert res.returncode == 0, res.stderr
    runs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/config.yaml"))
    assert [p.name for p in runs] == ["0", "1"]
    import yaml

    t = [yaml.safe_load((p / "config.yaml").read_text())["flow"]["transforms"] for p in runs]
    assert t == [2, 3]


def test_cfg_job_prints_config(tmp_path: Path) -> None:
    res = run_flowctl(["train", "config=quickstart_tiny", "--cfg", "job", "flow.bins=5"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "bins: 5" in res.stdout and "app: density" in res.stdout
    assert not any(tmp_path.iterdir())


def test_config_dir_adds_user_configs(tmp_path: Path) -> None:
    mine = tmp_path / "myconf"
    (mine / "flow").mkdir(parents=True)
    (mine / "flow" / "small.yaml").write_text("kind: coupling\nfeatures: null\ntransforms: 2\n"
                                             "hidden: [8]\ntransform: affine\n")
    (mine / "mine.yaml").write_text("# description: my own experiment\ndefaults:\n"
                                    "  - quickstart_tiny\n  - override flow: small\n  - _self_\n")
    res = run_flowctl(["--help", "--config-dir", str(mine)], tmp_path)
    assert res.returncode == 0 and "my own experiment" in res.stdout
    res = run_flowctl(["train", "--config-dir", str(mine), "config=mine", "--cfg", "job"],
                      tmp_path)
    assert res.returncode == 0, res.stderr
    assert "transform: affine" in res.stdout
    res = run_flowctl(["train", "config=mine", "--config-dir", str(mine), "trainer.epochs=1",
                       f"run_dir={tmp_path / 'r'}"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "r" / "checkpoints" / "best.pt").exists()


def _wait_for(path: Path, lines: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out waiting for training progress")


def test_sigterm_then_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "config=quickstart_tiny", f"run_dir={run}", "trainer.epochs=6",
            "data.n_train=4096"]
    proc = subprocess.Popen([sys.executable, "-m", "flowctl", *args], cwd=tmp_path,
                            env=flowctl_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(run / "metrics.jsonl", 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    assert (run / "checkpoints" / "last.pt").exists()
    done = len((run / "metrics.jsonl").read_text().splitlines())
    assert done < 6
    # training into the same run dir without resume is refused
    res = run_flowctl(args, tmp_path)
    assert res.returncode == 2 and "trainer.resume=true" in res.stderr
    res = run_flowctl(args + ["trainer.resume=true"], tmp_path)
    assert res.returncode == 0, res.stderr
    epochs = [json.loads(r)["epoch"] for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1] == 6
    assert json.loads((run / "metrics.json").read_text())["train"]["epochs"] == 6
    # a resume with a different flow is refused
    res = run_flowctl(args + ["trainer.resume=true", "flow.transforms=3"], tmp_path)
    assert res.returncode == 2 and "transforms" in res.stderr


@pytest.mark.skipif(os.environ.get("FLOWCTL_SKIP_DDP") == "1", reason="FLOWCTL_SKIP_DDP=1")
def test_ddp_two_processes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "flowctl", "train", "config=quickstart_tiny",
           "trainer.device=cpu"]
    env = flowctl_env()
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
                         check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "quickstart_tiny").iterdir())
    assert len(runs) == 1, [sorted(q.name for q in p.iterdir()) for p in runs] + [res.stderr]
    m = json.loads((runs[0] / "metrics.json").read_text())
    assert m["train"]["epochs"] == 2
    shutil.rmtree(tmp_path / "outputs")
