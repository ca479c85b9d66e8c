"""Coupling layers in row chunks without autograd (reused hidden-layer buffers)."""

from __future__ import annotations

import pytest
import torch

from flowctl.flows.coupling import Coupling
from flowctl.flows.elementwise import RQS


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("context", [0, 3])
def test_chunked_coupling_with_reused_buffers_equals_one_pass(activation, residual, context):
    """Without autograd on the CPU a coupling layer runs in row chunks whose hidden layers
    write into buffers reused from chunk to chunk; the result equals the one-pass layer."""
    torch.manual_seed(7)
    mask = torch.tensor([True, False, True, False, False])
    kw = {"hidden": [24, 24], "context": context, "residual": residual,
          "activation": activation}
    chunked = Coupling(mask, RQS(6), chunk_elements=24 * 7, **kw).double()
    whole = Coupling(mask, RQS(6), chunk_elements=0, **kw).double()
    for p in chunked.parameters():
        torch.nn.init.normal_(p, std=0.4)
    whole.load_state_dict(chunked.state_dict())
    x = 2 * torch.randn(50, 5, dtype=torch.float64)
    c = torch.randn(50, context, dtype=torch.float64) if context else None
    with torch.no_grad():
        for direction in ("forward", "inverse"):
            got = getattr(chunked, direction)(x, c)
            want = getattr(whole, direction)(x, c)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
