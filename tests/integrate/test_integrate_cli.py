"""`flowctl integrate / sample / evaluate` end to end in subprocesses, on tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["trainer.calls=3000", "trainer.batch=500", "trainer.buffer=3000",
        "trainer.buffered_steps=1", "estimate.calls=4000", "flow.hidden=[16,16]", "flow.bins=8",
        "unweight.replicas=100", "eval.n=4000", "peers.vegas_unweight_calls=1000"]


def flowctl(args: list[str], cwd: Path, timeout: float = 300, pythonpath: str = ""
            ) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), pythonpath,
                                                    env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    env.pop("FLOWCTL_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "flowctl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def qqg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("qqg")
    res = flowctl(["integrate", "config=integrate_ee_qqg", "peers.vegas=false",
                   f"run_dir={cwd / 'run'}", *TINY], cwd)
    assert res.returncode == 0, res.stderr
    assert "flowctl" in res.stdout and "plain MC" in res.stdout and "rel.std/pt" in res.stdout
    assert "joined to the fresh estimate" in res.stdout or "fresh estimate alone" in res.stdout
    return cwd / "run"


def test_integrate_writes_summary(qqg_run: Path) -> None:
    m = json.loads((qqg_run / "metrics.json").read_text())["integrate"]
    assert m["integrand"] == "ee_qqg" and m["calls_total"] == 7000
    fl = m["methods"]["flowctl"]
    assert fl["calls_train"] == 3000 and fl["calls_estimate"] == 4000
    assert abs(fl["pull"]) < 4
    for key in ("rel_std", "ess_fraction", "error"):
        assert fl[key] > 0
    assert 0 < fl["unweighting"]["efficiency"] <= 1
    # the estimate's points are stratified: 45 x 44 latent hypercubes of >= 2 points
    assert m["stratified"] and fl["strata"] == [[45, 44]] and fl["rel_std_iid"] > 0
    assert m["methods"]["plain MC"]["calls"] == 7000
    # late training batches joined to the fresh estimate (default), or the reason why not
    c = m["combined"]
    assert m["fresh_error"] > 0 and (c["used"] or c["reason"])
    assert not c["used"] or (m["error"] < m["fresh_error"] and c["training"]["batches"] >= 2)
    for name in ("config.yaml", "checkpoints/best.pt", "checkpoints/last.pt", "metrics.jsonl"):
        assert (qqg_run / name).exists(), name


def test_sample_writes_unweighted_events(qqg_run: Path) -> None:
    res = flowctl(["sample", f"run={qqg_run}", "n=500"], qqg_run.parent)
    assert res.returncode == 0, res.stderr
    assert "500 unweighted events" in res.stdout and "efficiency" in res.stdout
    with h5py.File(qqg_run / "events.h5") as h:
        p = h["momenta"][:]
        assert p.shape == (500, 3, 4) and h["x"].shape == (500, 2)
        assert abs(p[..., 0].sum(1) - 91.2).max() < 1e-6
        assert 0 < h.attrs["efficiency"] <= 1 and len(h["weights"]) == 500
    m = json.loads((qqg_run / "metrics.json").read_text())["sample"]
    assert m["n"] == 500 and m["calls"] > 500


def test_evaluate_plots(qqg_run: Path) -> None:
    res = flowctl(["evaluate", f"run={qqg_run}"], qqg_run.parent)
    assert res.returncode == 0, res.stderr
    for p in ("weights.png", "marginals.png", "dalitz.png", "training.png"):
        assert (qqg_run / "plots" / p).stat().st_size > 1000, p


def test_user_integrand_and_bad_targets(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "def f(x):\n    return (2 * x).prod(-1)\n"
        "def wrong(x):\n    return x\n")
    res = flowctl(["integrate", "config=integrate", "integrand.target=mine:f",
                   "integrand.dim=3", "integrand.exact=1.0", "peers.vegas=false",
                   f"run_dir={tmp_path / 'run'}", *TINY], tmp_path, pythonpath=str(tmp_path))
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())["integrate"]
    assert m["exact"] == 1.0 and m["dim"] == 3 and abs(m["pull"]) < 4
    for target, msg in [("mine:nope", "has no attribute 'nope'"),
                        ("nomod_abc:f", "cannot import module 'nomod_abc'"),
                        ("mine:wrong", "returned shape")]:
        res = flowctl(["integrate", "config=integrate", f"integrand.target={target}",
                       "integrand.dim=2", f"run_dir={tmp_path / 'bad'}"], tmp_path,
                      pythonpath=str(tmp_path))
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0] and "Traceback" not in res.stderr, lines
    res = flowctl(["integrate", "config=integrate"], tmp_path)
    assert res.returncode == 2 and "integrand.target is required" in res.stderr


def test_vegas_peer_same_calls(tmp_path: Path) -> None:
    pytest.importorskip("vegas")
    res = flowctl(["integrate", "config=integrate_camel", "integrand.dim=2",
                   f"run_dir={tmp_path / 'run'}", "peers.plain=false", *TINY], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "VEGAS" in res.stdout
    methods = json.loads((tmp_path / "run" / "metrics.json").read_text())["integrate"]["methods"]
    v = methods["VEGAS"]
    assert 0.8 * 7000 <= v["calls"] <= 7000 and abs(v["pull"]) < 5 and v["rel_std"] > 0
    assert v["unweighting"]["extra_calls"] == 1000
    # the camel's two peaks: both samplers find both in 2-d; the summary says so
    for name in ("flowctl", "VEGAS"):
        modes = methods[name]["modes"]
        assert modes["found"] == [True, True] and modes["all_found"], (name, modes)
        assert sum(modes["weight_share"]) == pytest.approx(1.0)
    assert "flowctl: modes found 2/2" in res.stdout and "VEGAS: modes found 2/2" in res.stdout
