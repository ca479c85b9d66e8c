"""Reading a run directory never runs code: malicious checkpoints and configs are refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from flowctl.cli import main
from tests.conftest import run_flowctl


class _Evil:
    """Pickles to ``os.system("touch MARK")``: what a crafted checkpoint would hold."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture()
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "shared_run"
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("samples.h5", ".lock"))  # shared run
    return dst


@pytest.mark.parametrize("which", ["best.pt", "last.pt"])
def test_malicious_checkpoint_is_refused(run_copy: Path, tmp_path: Path, which: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    mark = tmp_path / "PWNED"
    ck = run_copy / "checkpoints"
    torch.save({"format_version": 1, "model": _Evil(mark)}, ck / which)
    if which == "last.pt":
        (ck / "best.pt").unlink()
    for argv in (["sample", f"run={run_copy}", "n=10"], ["evaluate", f"run={run_copy}"]):
        code = main(argv)
        line = _one_error_line(capsys)
        assert code != 0 and "refusing to load" in line and which in line, line
        assert not mark.exists(), "the pickled command ran"
    assert not (run_copy / "samples.h5").exists()


def test_malicious_last_pt_on_resume(run_copy: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    mark = tmp_path / "PWNED"
    torch.save({"format_version": 1, "model": _Evil(mark)}, run_copy / "checkpoints" / "last.pt")
    code = main(["train", "config=quickstart_tiny", f"run_dir={run_copy}", "trainer.resume=true",
                 "trainer.epochs=3"])
    line = _one_error_line(capsys)
    assert code == 1 and "refusing to load" in line
    assert not mark.exists()


def test_plain_pickle_file_is_refused(run_copy: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    mark = tmp_path / "PWNED"
    (run_copy / "checkpoints" / "best.pt").write_bytes(pickle.dumps({"x": _Evil(mark)}))
    assert main(["sample", f"run={run_copy}", "n=10"]) != 0
    assert "refusing to unpickle" in _one_error_line(capsys)
    assert not mark.exists()


def test_malicious_classifier_checkpoint(tmp_path: Path) -> None:
    from flowctl.apps.common import UserError
    from flowctl.apps.reweight import _load_predictor

    mark = tmp_path / "PWNED"
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": "flowctl-classifier-1", "model": _Evil(mark)},
               tmp_path / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="refusing to load"):
        _load_predictor(tmp_path)
    assert not mark.exists()


@pytest.mark.parametrize("section", [
    {"hydra": {"callbacks": {"evil": {"_target_": "shutil.copy", "src": "config.yaml",
                                      "dst": "MARK"}}}},
    {"defaults": ["_self_", {"hydra/callbacks": "evil"}]},
    {"flow": {"_target_": "os.system", "command": "touch MARK"}},
])
def test_malicious_config_is_refused(run_copy: Path, section: dict,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(run_copy)
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    for k, v in section.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) and k in cfg else v
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["sample", f"run={run_copy}", "n=10"])
    line = _one_error_line(capsys)
    assert code == 2 and "refusing to read this run" in line, line
    assert not (run_copy / "MARK").exists()
    assert not (run_copy / "samples.h5").exists()


def test_interpolations_in_a_run_config_stay_text(run_copy: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An ``${oc.env:...}`` written into a shared run is not resolved (values only)."""
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    cfg["note"] = "${oc.env:HOME}"
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    from flowctl.rundir import sanitized_config

    assert sanitized_config(run_copy)["note"] == "\\${oc.env:HOME}"
    assert main(["sample", f"run={run_copy}", "n=10"]) == 0


def test_malicious_checkpoint_via_subprocess(run_copy: Path, tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: non-zero exit, nothing executed."""
    mark = tmp_path / "PWNED"
    torch.save({"format_version": 1, "model": _Evil(mark)}, run_copy / "checkpoints" / "best.pt")
    res = run_flowctl(["evaluate", f"run={run_copy}"], tmp_path)
    assert res.returncode != 0 and "refusing to load" in res.stderr
    assert not mark.exists()


def test_user_function_target_needs_the_users_consent(run_copy: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """``integrand.target``/``simulator.target`` name code that a command imports and calls: a
    run's value is used only when the reader passes it again on the command line."""
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    cfg["simulator"] = {"target": "os:system", "params": {"command": "touch MARK"}}
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["sample", f"run={run_copy}", "n=10"])
    line = _one_error_line(capsys)
    assert code == 2 and "simulator.target='os:system' imports and runs code" in line, line
    from flowctl.rundir import sanitized_config

    trusted = sanitized_config(run_copy, frozenset({"simulator.target"}))
    assert trusted["simulator"]["target"] == "os:system"
