"""Real processes: SIGTERM pre-emption + resume, and 2-process DDP over gloo on CPU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _common import cfg, make_data, make_model, mse, weights_hash

from flowctl.training import load_checkpoint, train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _script(run_dir: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "_train_script.py"), str(run_dir), mode],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_in_subprocess_then_resume_matches_uninterrupted(tmp_path):
    run = tmp_path / "run"
    victim = _script(run, "slow")
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline, "no metrics line within 60 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGTERM)
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == 143, err
    assert "SIGTERM" in err and "resume" in err
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 8 <= ck["step"] < 32, ck["step"]  # stopped during epoch 2 (or at its start)
    assert not (run / "hash.txt").exists()

    resumed = _script(run, "resume")
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    # the uninterrupted reference, in-process with the same settings as _train_script.py
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = make_model()
        train(ref, mse, make_data(), make_data(48, seed=9),
              cfg(epochs=4, schedule="cosine", warmup_steps=3), tmp_path / "straight")
    finally:
        torch.set_num_threads(threads)
    assert (run / "hash.txt").read_text() == weights_hash(ref)
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_ddp_two_gloo_processes(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(HERE / "_ddp_script.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    hashes = [(tmp_path / f"hash_rank{r}.txt").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1]
    # 1 epoch (4 steps) then resume to 2 epochs == 2 straight epochs, in one shared run dir
    assert [(tmp_path / f"hash_resumed_rank{r}.txt").read_text() for r in (0, 1)] == hashes
    # only rank 0 wrote: one metrics.jsonl and one set of checkpoints
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("metrics.jsonl")) \
        == ["run_rank0/metrics.jsonl", "shared/metrics.jsonl"]
    assert not (tmp_path / "run_rank1").exists()
    assert (tmp_path / "run_rank0" / "checkpoints" / "last.pt").is_file()
    lines = (tmp_path / "run_rank0" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    s0, s1 = (json.loads((tmp_path / f"summary_rank{r}.json").read_text()) for r in (0, 1))
    assert s0["world_size"] == 2 and s0["steps"] == 2 * 4  # 128 samples per rank / 32
    assert s0["val_loss"] == s1["val_loss"]
    # 2 ranks x batch 32 with averaged gradients == 1 process with batch 64, same data order
    ref = make_model(seed=0, dropout=0.0)
    ref_s = train(ref, mse, make_data(), make_data(50, seed=9),
                  cfg(epochs=2, schedule="step", milestones=[5], gamma=0.5, warmup_steps=2,
                      batch_size=64),
                  tmp_path / "single")
    ddp = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5)
    assert s0["val_loss"] == pytest.approx(ref_s["val_loss"], rel=1e-4)
