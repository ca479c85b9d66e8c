"""The compiled training loss of the posterior app: when it is used, and (slow) that it gives
the eager loss and gradients and trains a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowctl.apps import load_app
from flowctl.apps.common import UserError, build_flow
from flowctl.apps.posterior_loss import AUTO_MIN_SIMULATIONS, make_loss, nll, use_compile
from tests.posterior.test_posterior_sequential import _cfg


def test_use_compile_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert use_compile(True, 10) and not use_compile(False, 10**6)
    monkeypatch.setattr("flowctl.training.compiled_loss.has_cxx", lambda: True)
    assert not use_compile("auto", AUTO_MIN_SIMULATIONS - 1, "cpu")
    assert use_compile("auto", AUTO_MIN_SIMULATIONS, "cpu")
    assert not use_compile("auto", 10**6, "cuda")  # auto: CPU only
    monkeypatch.setattr("flowctl.training.compiled_loss.has_cxx", lambda: False)
    assert not use_compile("auto", 10**6, "cpu")  # no C++ compiler: eager
    with pytest.raises(UserError, match="compile='yes'"):
        use_compile("yes", 10)
    assert make_loss(False) is nll


def test_bad_compile_value_stops_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="compile"):
        load_app("posterior").COMMANDS["train"](_cfg(compile=3), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_small_budget_trains_eager(tmp_path: Path) -> None:
    out = load_app("posterior").COMMANDS["train"](_cfg(compile="auto"), tmp_path / "run")
    assert out["compiled"] is False


@pytest.mark.slow
def test_compiled_loss_matches_eager_and_trains(tmp_path: Path) -> None:
    """Same loss and gradients as eager (float32 round-off) at a small and a large batch, and
    under no_grad the eager path; then a compiled run end to end (30-110 s of compiling)."""
    torch.manual_seed(0)
    flow = build_flow({"kind": "maf", "features": 2, "context": 2, "transforms": 2,
                       "hidden": [16, 16], "transform": "rqs", "bins": 4, "tail_bound": 3.0,
                       "standardize": True})
    th, x = torch.randn(300, 2), torch.randn(300, 2)
    flow.initialize(th, x)
    with torch.no_grad():  # move off the identity initialisation
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    loss = make_loss(True)
    for n in (40, 300):
        flow.zero_grad()
        le = nll(flow, (th[:n], x[:n]))
        le.backward()
        ge = torch.cat([p.grad.flatten() for p in flow.parameters()])
        flow.zero_grad()
        lc = loss(flow, (th[:n], x[:n]))
        lc.backward()
        gc = torch.cat([p.grad.flatten() for p in flow.parameters()])
        assert abs(float(le) - float(lc)) < 1e-4
        assert float((ge - gc).norm() / ge.norm()) < 1e-3
    with torch.no_grad():
        assert abs(float(loss(flow, (th, x))) - float(nll(flow, (th, x)))) < 1e-5
    out = load_app("posterior").COMMANDS["train"](_cfg(compile=True), tmp_path / "run")
    assert out["compiled"] is True and out["stopped_reason"] == "early_stopping"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["train"]
    assert saved["compiled"] is True


def test_failing_compiler_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A compiled loss whose first call fails (a broken toolchain) warns once on stderr and
    returns the eager loss from then on, so training goes on."""
    import flowctl.apps.posterior_loss as pl

    def broken(fn, **_kw):  # what torch.compile gives when the C++ build fails at first call
        def run(*_a, **_k):
            raise RuntimeError("C++ compile error: cc1plus not found")
        return run

    monkeypatch.setattr(pl.torch, "compile", broken)
    monkeypatch.setattr(pl, "_COMPILED", None)
    flow = build_flow({"kind": "maf", "features": 2, "context": 2, "transforms": 2,
                       "hidden": [8, 8]})
    batch = (torch.randn(16, 2), torch.randn(16, 2))
    loss = make_loss(True)
    first = loss(flow, batch)
    assert torch.allclose(first, nll(flow, batch))
    assert "torch.compile of the loss failed" in capsys.readouterr().err
    assert torch.allclose(loss(flow, batch), nll(flow, batch))
    assert capsys.readouterr().err == ""  # said once
