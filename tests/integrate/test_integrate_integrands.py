"""Shipped integrands against their exact values by plain Monte Carlo (cheap)."""

from __future__ import annotations

import math

import pytest
import torch

from flowctl.integrands import SHIPPED, IntegrandError, resolve
from flowctl.integrands.physics import dilog, three_jet_rate

CASES = [
    ("gauss", 2, {}), ("gauss", 16, {}), ("camel", 2, {}), ("camel", 4, {}),
    ("circles", 2, {}), ("annulus", 2, {}), ("polynomial", 18, {}), ("polynomial", 96, {}),
    ("ee_qqg", 2, {}), ("ee_qqg", 2, {"mapping": "log", "y_cut": 0.05}),
    ("ee_mumu", 2, {}), ("ee_mumu", 2, {"z": True}),
]


@pytest.mark.parametrize(("name", "dim", "params"), CASES)
def test_plain_mc_matches_exact(name: str, dim: int, params: dict) -> None:
    ig = SHIPPED[name](dim, **params)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(400_000, dim, dtype=torch.float64, generator=g)
    w = ig(x)
    assert w.shape == (400_000,) and w.dtype == torch.float64
    mean, se = w.mean().item(), w.std().item() / math.sqrt(len(w))
    assert abs(mean - ig.exact) < 4.5 * math.hypot(se, ig.exact_error), (mean, se, ig.exact)


def test_exact_values() -> None:
    assert SHIPPED["camel"](4).exact == pytest.approx(0.963656968402, rel=1e-10)
    assert SHIPPED["gauss"](16).exact == pytest.approx(0.993508603223, rel=1e-10)
    assert SHIPPED["annulus"](2).exact == pytest.approx(0.510508806208, rel=1e-10)
    assert SHIPPED["polynomial"](54).exact == 9
    assert three_jet_rate(0.05) == pytest.approx(8.647683, abs=2e-6)
    assert three_jet_rate(0.01) == pytest.approx(27.940637, abs=2e-6)
    assert dilog(0.5) == pytest.approx(math.pi**2 / 12 - math.log(2) ** 2 / 2, rel=1e-14)
    assert dilog(1.0) == pytest.approx(math.pi**2 / 6, rel=1e-14)
    assert dilog(-1.0) == pytest.approx(-math.pi**2 / 12, rel=1e-14)
    # e+e- -> mu mu through the photon: 4 pi alpha^2 / (3 s) in pb
    s, a = 91.2**2, 1 / 137.036
    assert SHIPPED["ee_mumu"](2).exact == pytest.approx(4 * math.pi * a**2 / (3 * s) * 3.89379656e8)


@pytest.mark.parametrize("name", ["ee_qqg", "ee_mumu"])
def test_momenta_conserved_and_massless(name: str) -> None:
    ig = SHIPPED[name](2)
    u = torch.rand(1000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if name == "ee_qqg":
        u = u[ig(u) > 0]
    p = ig.momenta(u, torch.Generator().manual_seed(1))
    assert p.shape == (len(u), len(ig.particles), 4)
    tot = p.sum(1)
    assert torch.allclose(tot[:, 0], torch.full_like(tot[:, 0], 91.2), atol=1e-9)
    assert torch.allclose(tot[:, 1:], torch.zeros_like(tot[:, 1:]), atol=1e-9)
    m2 = p[..., 0] ** 2 - (p[..., 1:] ** 2).sum(-1)
    assert m2.abs().max() < 1e-8
    if name == "ee_qqg":  # x_i = 2 E_i / sqrt(s) reproduce the mapped invariants: y_ij > y_cut
        x = 2 * p[..., 0] / 91.2
        assert (1 - x).min() > 0.01 - 1e-12


def test_bad_dims_and_params() -> None:
    with pytest.raises(IntegrandError, match="dim 2"):
        SHIPPED["circles"](3)
    with pytest.raises(IntegrandError, match="y_cut"):
        SHIPPED["ee_qqg"](2, y_cut=0.5)
    with pytest.raises(IntegrandError, match="unknown integrand"):
        resolve({"name": "nope", "dim": 2})
    with pytest.raises(IntegrandError, match="params"):
        resolve({"name": "camel", "dim": 2, "params": {"beta": 1}})
    with pytest.raises(IntegrandError, match="dim"):
        resolve({"name": "camel", "dim": 0})
    assert resolve({"name": "camel", "dim": 2, "exact": 1.5}).exact == 1.5


def test_user_target(tmp_path, monkeypatch) -> None:
    (tmp_path / "myfuncs.py").write_text(
        "import torch\n"
        "def prod(x, c=2.0):\n    return (c * x).prod(-1)\n"
        "def bad_shape(x):\n    return x\n"
        "def boom(x):\n    raise RuntimeError('kaput')\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ig = resolve({"target": "myfuncs:prod", "dim": 3, "exact": 1.0})
    assert ig.dim == 3 and ig.exact == 1.0 and ig.name == "prod"
    assert ig(torch.full((2, 3), 0.5)).tolist() == [1.0, 1.0]
    ig = resolve({"target": "myfuncs:prod", "dim": 1, "params": {"c": 3.0}})
    assert ig(torch.full((1, 1), 0.5)).item() == 1.5
    for target, msg in [("myfuncs:bad_shape", "shape"), ("myfuncs:boom", "kaput"),
                        ("myfuncs:NOT_CALLABLE", "not a function"),
                        ("myfuncs:missing", "no attribute"), ("nomodule_xyz:f", "cannot import"),
                        ("justaname", "form")]:
        with pytest.raises(IntegrandError, match=msg) as info:
            resolve({"target": target, "dim": 2})
        assert "\n" not in str(info.value)
