"""User errors: one line on stderr, exit code 2, no traceback (in-process where possible)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowctl.cli import main
from tests.conftest import run_flowctl


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_help_lists_commands_and_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("train", "sample", "evaluate", "distill", "integrate", "classify"):
        assert f"  {word} " in out
    assert "quickstart " in out and "2-D ring" in out and "quickstart_tiny" in out


def test_unknown_config_lists_available(capsys: pytest.CaptureFixture[str]) -> None:
    line = _err(capsys, ["train", "config=quickstrat"])
    assert "unknown config 'quickstrat'" in line and "quickstart" in line and "density" in line


def test_unknown_key_names_closest(capsys: pytest.CaptureFixture[str]) -> None:
    line = _err(capsys, ["train", "config=quickstart_tiny", "flow.transfroms=4"])
    assert "flow.transfroms" in line and "flow.transforms" in line
    line = _err(capsys, ["train", "config=quickstart_tiny", "trainer.learning_rate=1e-3"])
    assert "unknown key" in line


def test_wrong_type(capsys: pytest.CaptureFixture[str]) -> None:
    line = _err(capsys, ["train", "config=quickstart_tiny", "trainer.epochs=ten"])
    assert "trainer.epochs" in line and "'ten'" in line and "int" in line
    line = _err(capsys, ["train", "config=quickstart_tiny", "flow.hidden=64"])
    assert "flow.hidden" in line and "list" in line
    line = _err(capsys, ["train", "config=quickstart_tiny", "-m", "seed=0,x"])
    assert "seed" in line


def test_unknown_group_option(capsys: pytest.CaptureFixture[str]) -> None:
    line = _err(capsys, ["train", "config=quickstart_tiny", "flow=maf_rqz"])
    assert "maf_rqs" in line and "coupling_rqs" in line


def test_missing_and_bad_runs(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = _err(capsys, ["sample", f"run={tmp_path / 'nope'}"])
    assert "does not exist" in line
    (tmp_path / "empty").mkdir()
    line = _err(capsys, ["evaluate", f"run={tmp_path / 'empty'}"])
    assert "no config.yaml" in line
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("app: density\n")
    line = _err(capsys, ["evaluate", f"run={tmp_path / 'half'}"])
    assert "no checkpoint" in line
    line = _err(capsys, ["sample", "config=quickstart_tiny"])
    assert "no finished run of config" in line


def test_unknown_command_and_args(capsys: pytest.CaptureFixture[str]) -> None:
    line = _err(capsys, ["trian", "config=quickstart"])
    assert "did you mean train" in line
    line = _err(capsys, ["train"])
    assert "needs config=NAME" in line
    line = _err(capsys, ["train", "config=quickstart_tiny", "flow.bins"])
    assert "key=value" in line


def test_required_value(capsys: pytest.CaptureFixture[str]) -> None:
    line = _err(capsys, ["train", "config=density"])
    assert "data.path" in line


def test_unsupported_subcommand(tiny_run: Path) -> None:
    res = run_flowctl(["distill", f"run={tiny_run}"], tiny_run.parent)
    assert res.returncode == 2
    assert "does not support `distill`" in res.stderr and "train, sample, evaluate" in res.stderr
    assert "Traceback" not in res.stderr


def test_data_error_one_line(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n3,nan\n5,6\n")
    res = run_flowctl(["train", "config=density", f"data.path={csv}", "trainer=tiny",
                       f"run_dir={tmp_path / 'r'}"], tmp_path)
    assert res.returncode == 2, res.stderr
    assert "1 of 3 rows contain NaN" in res.stderr and "Traceback" not in res.stderr
    res = run_flowctl(["train", "config=density", f"data.path={csv}", "trainer=tiny",
                       f"run_dir={tmp_path / 'r'}"], tmp_path, FLOWCTL_DEBUG="1")
    assert "Traceback" in res.stderr


def test_cfg_with_multirun_and_missing_launcher(capsys: pytest.CaptureFixture[str]) -> None:
    line = _err(capsys, ["train", "config=quickstart_tiny", "-m", "seed=0,1", "--cfg", "job"])
    assert "-m" in line
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        line = _err(capsys, ["train", "config=quickstart_tiny", "-m", "seed=0,1",
                             "hydra/launcher=submitit_slurm"])
        assert "flowctl[slurm]" in line


def test_distill_and_classify_with_config_make_a_new_run(tmp_path: Path) -> None:
    """`distill|classify config=NAME` (no run=) start a new run from the config's inputs
    instead of looking for an existing run of NAME; here the density app then refuses."""
    for command in ("distill", "classify"):
        res = run_flowctl([command, "config=quickstart_tiny", f"run_dir={tmp_path / command}"],
                          tmp_path)
        assert res.returncode == 2, res.stderr
        assert f"does not support `{command}`" in res.stderr
        assert "no run of config" not in res.stderr


def test_required_top_level_value_given_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "needs_file.yaml").write_text(
        "defaults:\n  - quickstart_tiny\n  - _self_\nextra_file: ???\n")
    argv = ["train", "config=needs_file", "--config-dir", str(tmp_path)]
    assert main([*argv, "extra_file=events.h5", "--cfg", "job"]) == 0
    assert "extra_file: events.h5" in capsys.readouterr().out
    line = _err(capsys, argv)
    assert "extra_file is required" in line
