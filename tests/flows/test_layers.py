"""Preprocessing, normalization, permutations and base distributions."""

from __future__ import annotations

import math

import pytest
import torch

from flowctl.flows import (
    ActNorm,
    Affine,
    BatchNorm,
    BoxUniform,
    Logit,
    MinMax,
    Permutation,
    Standardize,
    StandardNormal,
)


def _check_layer(layer, x, atol=1e-9):
    """Inverse and per-sample log-det of a layer against the autograd Jacobian."""
    z, ld = layer(x)
    x_back, ld_inv = layer.inverse(z)
    assert torch.allclose(x_back, x, atol=atol)
    assert torch.allclose(ld, -ld_inv, atol=atol)
    for i in range(min(4, x.shape[0])):
        jac = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0][0], x[i])
        assert torch.allclose(torch.linalg.slogdet(jac).logabsdet, ld[i], atol=1e-8)


def test_logit_layer():
    x = torch.rand(20, 3, dtype=torch.float64)
    x[0] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    layer = Logit(alpha=1e-6)
    z, ld = layer(x)
    assert torch.isfinite(z).all() and torch.isfinite(ld).all()
    _check_layer(layer, x[1:])
    with pytest.raises(ValueError, match="alpha"):
        Logit(0.5)


def test_standardize_and_minmax_fit_and_logdet():
    x = torch.randn(1000, 3, dtype=torch.float64) * torch.tensor([5.0, 0.1, 1.0]) + 7.0
    st = Standardize(3).double()
    z = st.initialize(x)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(z.std(0), torch.ones(3, dtype=torch.float64), atol=1e-10)
    _check_layer(st, x[:5])
    mm = MinMax(3, margin=0.1).double()
    z = mm.initialize(x)
    assert z.min() > 0 and z.max() < 1
    _check_layer(mm, x[:5])
    # fitted statistics live in the state_dict
    assert set(st.state_dict()) == {"mean", "std"}
    assert set(mm.state_dict()) == {"lo", "hi"}


def test_actnorm_initialises_to_unit_statistics():
    x = torch.randn(512, 4, dtype=torch.float64) * 3 - 2
    layer = ActNorm(4).double()
    z = layer.initialize(x)
    assert torch.allclose(z.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(z.std(0), torch.ones(4, dtype=torch.float64), atol=1e-10)
    _check_layer(layer, x[:4])


def test_batchnorm_logdet_in_train_and_eval_mode():
    torch.manual_seed(0)
    layer = BatchNorm(3).double()
    with torch.no_grad():
        layer.log_gamma.copy_(torch.tensor([0.3, -0.2, 0.1]))
        layer.beta.copy_(torch.tensor([1.0, 0.0, -1.0]))
    x = torch.randn(256, 3, dtype=torch.float64) * torch.tensor([2.0, 0.5, 1.0]) + 1.0
    layer.train()
    z, ld = layer(x)
    # train mode: the batch is mapped with its own statistics; the log-det is that map's
    var = x.var(0, unbiased=False)
    expected = (layer.log_gamma - 0.5 * torch.log(var + layer.eps)).sum()
    assert torch.allclose(ld, expected.expand(256), atol=1e-12)
    assert torch.allclose(z.mean(0), layer.beta, atol=1e-10)
    # running statistics moved towards the batch
    assert (layer.running_mean - 0.1 * x.mean(0)).abs().max() < 1e-12
    layer.eval()
    _check_layer(layer, x[:4])


def test_permutation_layer():
    perm = Permutation([2, 0, 1])
    x = torch.randn(5, 3)
    z, ld = perm(x)
    assert torch.equal(z, x[:, [2, 0, 1]])
    assert torch.equal(perm.inverse(z)[0], x)
    assert torch.equal(ld, torch.zeros(5))


def test_affine_scale_is_bounded_and_exact():
    fam = Affine(log_scale_bound=5.0)
    x = torch.randn(10, dtype=torch.float64)
    params = torch.stack([torch.full((10,), 1e4), torch.randn(10)], -1).double()
    y, ladj = fam(x, params)
    assert torch.isfinite(y).all() and ladj.max() <= 5.0
    x_back, ladj_inv = fam.inverse(y, params)
    assert torch.allclose(x_back, x, atol=1e-9)
    assert torch.allclose(ladj, -ladj_inv)


def test_base_distributions():
    normal = StandardNormal(2)
    z = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    assert torch.allclose(normal.log_prob(z), torch.tensor([-math.log(2 * math.pi),
                                                            -1 - math.log(2 * math.pi)]))
    uni = BoxUniform(2)
    lp = uni.log_prob(torch.tensor([[0.5, 0.5], [1.5, 0.5], [0.0, 1.0]]))
    assert lp[0] == 0 and lp[1] == -math.inf and lp[2] == 0
    s = uni.sample(1000, dtype=torch.float64)
    assert s.dtype == torch.float64 and (s >= 0).all() and (s <= 1).all()


def test_permutation_layers_of_a_flow_do_not_share_storage():
    from flowctl.flows import build

    flow = build({"kind": "maf", "features": 4, "transforms": 3, "permutation": "reverse",
                  "hidden": [8]})
    perms = [m for m in flow.transform.transforms if isinstance(m, Permutation)]
    with torch.no_grad():
        perms[0].perm.copy_(torch.tensor([1, 0, 2, 3]))
    assert perms[1].perm.tolist() == [3, 2, 1, 0]
