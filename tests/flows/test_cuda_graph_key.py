"""``cuda_graph`` reaches MAF sampling / IAF density from a spec (and ``set_cuda_graph``)."""

from __future__ import annotations

import pytest
import torch

from flowctl.flows import MaskedAutoregressive, build, set_cuda_graph

SPEC = {"kind": "maf", "features": 6, "context": 2, "transforms": 3, "hidden": [32, 32]}


def _randomize(flow: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return flow


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_spec_key_sets_every_layer_and_is_exact_on_cpu(kind: str) -> None:
    graphed = _randomize(build({**SPEC, "kind": kind, "cuda_graph": True}))
    plain = build({**SPEC, "kind": kind})
    plain.load_state_dict(graphed.state_dict())
    layers = [m for m in graphed.modules() if isinstance(m, MaskedAutoregressive)]
    assert len(layers) == 3 and all(m.cuda_graph for m in layers)
    ctx = torch.randn(2)
    with torch.no_grad():
        torch.manual_seed(1)
        a = graphed.sample(50, ctx)
        torch.manual_seed(1)
        b = plain.sample(50, ctx)
    assert torch.equal(a, b)  # on CPU the key changes nothing
    assert set_cuda_graph(plain, True) == 3 and all(
        m.cuda_graph for m in plain.modules() if isinstance(m, MaskedAutoregressive))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_sampling_matches_eager_on_gpu() -> None:
    flow = _randomize(build({**SPEC, "cuda_graph": True})).cuda()
    eager = build(SPEC).cuda()
    eager.load_state_dict(flow.state_dict())
    z = torch.randn(256, 6, device="cuda")
    ctx = torch.randn(256, 2, device="cuda")
    with torch.no_grad():
        for _ in range(2):  # the first call captures, the second replays
            x_graph, _ = flow.transform.inverse(z, ctx)
        x_eager, _ = eager.transform.inverse(z, ctx)
    assert torch.allclose(x_graph, x_eager, atol=1e-5)
