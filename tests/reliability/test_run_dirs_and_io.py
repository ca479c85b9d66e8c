"""One writer per run directory; read-only runs; full disks; file modes; nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowctl.cli import main
from tests.conftest import flowctl_env


def _flowctl(args: list[str], cwd: Path, fsize: int | None = None,
             umask: int = 0o022) -> subprocess.CompletedProcess:
    """``python -m flowctl ARGS`` with a umask and optionally a file-size limit (bytes): past
    it a write fails with EFBIG, as a full disk fails with ENOSPC."""

    def limits() -> None:
        os.umask(umask)
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "flowctl", *args], cwd=cwd, env=flowctl_env(),
                          capture_output=True, text=True, timeout=180, preexec_fn=limits,
                          check=False)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("flowctl:")]


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("samples.h5", ".lock"))  # shared run
    return dst


def test_second_writer_is_refused_naming_the_holder(run_copy: Path, tmp_path: Path) -> None:
    from flowctl.rundir import run_lock

    metrics_before = (run_copy / "metrics.json").read_text()
    with run_lock(run_copy, "train"):
        res = _flowctl(["train", "config=quickstart_tiny", f"run_dir={run_copy}",
                        "trainer.resume=true", "trainer.epochs=3"], tmp_path)
        assert res.returncode == 2, res.stderr
        (line,) = _error_lines(res.stderr)
        assert f"in use by PID {os.getpid()}" in line and "flowctl train" in line
        res = _flowctl(["sample", f"run={run_copy}", "n=10"], tmp_path)
        assert res.returncode == 2 and "in use by PID" in res.stderr
    assert not (run_copy / "samples.h5").exists()
    assert (run_copy / "metrics.json").read_text() == metrics_before


def test_stale_lock_of_a_dead_process_is_taken_over(run_copy: Path, tmp_path: Path) -> None:
    (run_copy / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone",
                                                "command": "train", "started": "then"}))
    res = _flowctl(["sample", f"run={run_copy}", "n=10"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (run_copy / "samples.h5").exists()


def test_read_only_run_is_left_untouched(run_copy: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A run the user cannot write to (a colleague's): evaluate prints, writes nothing there;
    with out=DIR the plots and metrics land in DIR. (Root ignores file modes, so the test
    makes the run read-only for flowctl by patching its writability check.)"""
    monkeypatch.setattr("flowctl.rundir.is_writable", lambda path: False)
    before = _tree_digest(run_copy)
    assert main(["evaluate", f"run={run_copy}"]) == 0
    captured = capsys.readouterr()
    assert "test NLL" in captured.out and "not writable" in captured.err
    out = tmp_path / "mine"
    assert main(["evaluate", f"run={run_copy}", f"out={out}"]) == 0
    assert main(["sample", f"run={run_copy}", f"out={out}", "n=20"]) == 0
    assert _tree_digest(run_copy) == before
    assert sorted(p.name for p in run_copy.iterdir()) == sorted(before_names(before))
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train", "evaluate", "sample"} <= set(metrics)
    assert (out / "plots" / "density.png").is_file() and (out / "samples.h5").is_file()
    assert not (out / "samples.h5").is_symlink()


def before_names(digest: dict[str, str]) -> set[str]:
    return {k.split("/")[0] for k in digest} | {".hydra", "plots", "checkpoints"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes; covered by the test above")
def test_read_only_run_by_mode(run_copy: Path, tmp_path: Path) -> None:
    for p in [run_copy, *run_copy.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        res = _flowctl(["evaluate", f"run={run_copy}"], tmp_path)
        assert res.returncode == 0 and "not writable" in res.stderr, res.stderr
    finally:
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_full_disk_during_sample(run_copy: Path, tmp_path: Path) -> None:
    res = _flowctl(["sample", f"run={run_copy}", "n=200000"], tmp_path, fsize=200_000)
    assert res.returncode == 1, res.stderr
    (line,) = _error_lines(res.stderr)
    assert str(run_copy / "samples.h5") in line and "File too large" in line
    assert "Traceback" not in res.stderr
    assert not list(run_copy.glob("*samples*")) and not list(run_copy.glob(".*.tmp"))


def test_full_disk_during_train(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = _flowctl(["train", "config=quickstart_tiny", f"run_dir={run}"], tmp_path, fsize=30_000)
    assert res.returncode == 1, res.stderr
    (line,) = _error_lines(res.stderr)
    assert str(run / "checkpoints") in line and "File too large" in line, line
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert not (run / ".complete").exists()


def test_tmpfs_disk_full_during_sample(run_copy: Path, tmp_path: Path) -> None:
    """A real ENOSPC: a 64 KiB tmpfs (needs mount rights; else the EFBIG tests above stand)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        small_run = mnt / "run"
        shutil.copytree(run_copy, small_run, ignore=shutil.ignore_patterns("*.pt", "*.png"))
        shutil.copytree(run_copy / "checkpoints", tmp_path / "ck")
        (small_run / "checkpoints").rmdir() if (small_run / "checkpoints").exists() else None
        (small_run / "checkpoints").symlink_to(tmp_path / "ck")
        res = _flowctl(["sample", f"run={small_run}", "n=200000"], tmp_path)
        assert res.returncode == 1, res.stderr
        (line,) = _error_lines(res.stderr)
        assert "No space left on device" in line and "samples.h5" in line
        assert not list(small_run.glob("*samples*")) and not list(small_run.glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_files_get_the_users_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flowctl.atomic import write_text

    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert main(["train", "config=quickstart_tiny", f"run_dir={run}"]) == 0
        assert main(["sample", f"run={run}", "n=10"]) == 0
        for name in ("config.yaml", "metrics.json", "checkpoints/best.pt", "checkpoints/last.pt",
                     "samples.h5", ".complete", "plots/loss.png"):
            assert (run / name).stat().st_mode & 0o777 == 0o644, name
        assert (run / "checkpoints").stat().st_mode & 0o777 == 0o755
        os.umask(0o077)
        assert write_text(tmp_path / "private.txt", "x").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
