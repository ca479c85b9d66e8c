r"""Exact inversion of a MADE-conditioned autoregressive transform in about one forward pass.

Inverting ``z_i = τ(x_i; θ_i(x_{<i}))`` (MAF sampling, IAF density) is usually done with D full
MADE passes. In a MADE, a hidden unit of degree ``d`` depends on ``x_1..x_d`` only and
``θ_i`` on hidden units of degree ``< i``. Once ``x_1..x_{i-1}`` are known, every unit of
degree ``i-1`` is final. So the inversion computes every unit exactly once, in degree order:

    step ``i`` (0-based, dimension ``i+1``): the units of degree ``i`` in every hidden layer,
    in layer order, then ``θ_{i+1}`` from the units of degree ``≤ i`` of the last layer,
    then ``x_{i+1} = τ^{-1}(z_{i+1}; θ_{i+1})``.

Treating the output rows of dimension ``i+1`` as "units of degree ``i``", every masked layer
follows one rule: a unit of degree ``d`` reads the inputs of degree ``≤ d``. MADE lays its
units out sorted by degree, so both sets are contiguous slices.

Blocking (as in a blocked LU): the steps are grouped in blocks of ``B`` degrees
``[s0, s0+B)``. At the start of a block, the contributions of all inputs of degree ``< s0``
(already final) to every unit computed in the block are one ordinary matrix product per
layer; inside the block, each step adds only the contributions of the inputs of degree
``s0..i``, at most ``B`` degrees wide. The arithmetic is about half a forward pass (the masked
half that a dense forward multiplies by zero is skipped) plus D small steps, instead of D
forward passes.

Layout: activations are kept unit-major, ``[units, N]``, so every per-step slice and every
finished prefix is contiguous; the output parameters are produced as ``[N, P]`` rows for the
element-wise family. No tensor is written in place, so the result is differentiable (an IAF
can be trained through it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .elementwise import ElementwiseFamily
from .made import MADE, MaskedLinear

DEFAULT_BLOCK = 32


@dataclass(frozen=True)
class _Plan:
    """Slice boundaries of every masked layer, per degree (Python ints, device-free).

    ``rows[k][d]``: ``(start, end)`` of the output units of layer ``k`` with degree ``d``
    (output layer: the rows of dimension ``d+1``), ``d = 0..D-1``.
    ``cols[k][d]``: number of inputs of layer ``k`` with degree ``≤ d``, ``d = 0..D-1``.
    """

    rows: tuple[tuple[tuple[int, int], ...], ...]
    cols: tuple[tuple[int, ...], ...]
    kinds: tuple[str, ...]  # per hidden layer: how its output becomes the next input


def made_layers(made: MADE) -> list[MaskedLinear]:
    """The masked layers of ``made`` in evaluation order (input, hidden..., output)."""
    return [made.input_layer, *made.hidden_layers, made.output_layer]


def _sorted(t: Tensor, what: str) -> Tensor:
    if t.numel() > 1 and bool((t[1:] < t[:-1]).any()):
        raise ValueError(f"incremental inversion needs {what} sorted by degree")
    return t


def make_plan(made: MADE) -> _Plan:
    """Precompute the per-degree slices of every layer of ``made``."""
    d = made.features
    degs = torch.arange(d)
    rows, cols = [], []
    layers = made_layers(made)
    for k, layer in enumerate(layers):
        out_deg = layer.out_degrees.detach().cpu().long()
        if k == len(layers) - 1:
            out_deg = out_deg - 1  # strict mask: dimension i reads degrees <= i-1
        out_deg = _sorted(out_deg, "output units")
        in_deg = _sorted(layer.in_degrees.detach().cpu().long(), "input units")
        start = torch.searchsorted(out_deg, degs, right=False).tolist()
        end = torch.searchsorted(out_deg, degs, right=True).tolist()
        rows.append(tuple(zip(start, end)))
        cols.append(tuple(torch.searchsorted(in_deg, degs, right=True).tolist()))
    n_hidden = len(layers) - 1
    if made.residual:  # input sets the stream h; (first, second) pairs add to it
        kinds = ("stream",) + tuple("inner" if j % 2 else "add" for j in range(1, n_hidden))
    else:
        kinds = ("plain",) * n_hidden
    return _Plan(tuple(rows), tuple(cols), kinds)


def needs_naive(made: MADE) -> bool:
    """True in training mode with dropout: each naive pass draws its own masks, and an exact
    inverse needs one fixed mask over all steps, so the two could not agree; keep the naive
    behaviour there."""
    drop = made.dropout
    return made.training and isinstance(drop, nn.Dropout) and drop.p > 0


def incremental_inverse(made: MADE, family: ElementwiseFamily, z: Tensor,
                        context: Tensor | None = None, block: int = DEFAULT_BLOCK,
                        plan: _Plan | None = None) -> tuple[Tensor, Tensor]:
    """Solve ``z = τ(x; made(x, context))`` for ``x`` exactly, each hidden unit computed once.

    Args:
        made: the conditioner (eval-mode dropout or none).
        family: element-wise map τ with ``inverse(y [N], params [N, P])``.
        z: ``[N, D]``.
        context: ``[N, C]`` or None.
        block: degrees per block (1 = a full prefix product every step).
        plan: from :func:`make_plan` (computed here if None).

    Returns:
        ``x [N, D]`` and the element-wise ``log|dx/dz|`` ``[N, D]``.
    """
    if plan is None:
        plan = make_plan(made)
    n, d = z.shape
    block = max(1, int(block))
    layers = made_layers(made)
    last = len(layers) - 1
    weights = [layer.weight * layer.mask for layer in layers]
    biases = [layer.bias for layer in layers]
    act = made.activation
    ctx = None
    if made.context_layer is not None:
        ctx = made.context_layer(context).t()  # [H0, N]
    zt = z.t().contiguous()  # [D, N]: row i is contiguous
    empty = z.new_zeros(0, n)
    prefix = [empty] * len(layers)  # inputs of layer k with degree < s0, [cols, N]
    pending: list[list[tuple[int, Tensor]]] = [[] for _ in layers]  # (degree, [r, N])
    xs: list[Tensor] = []
    ladjs: list[Tensor] = []
    for s0 in range(0, d, block):
        s1 = min(d, s0 + block)
        accs = []
        for k, w in enumerate(weights):
            done = [t for deg, t in pending[k] if deg < s0]
            if done:
                prefix[k] = torch.cat([prefix[k], *done])
                pending[k] = [(deg, t) for deg, t in pending[k] if deg >= s0]
            r0, r1 = plan.rows[k][s0][0], plan.rows[k][s1 - 1][1]
            c = prefix[k].shape[0]
            if k < last:
                acc = torch.addmm(biases[k][r0:r1, None], w[r0:r1, :c], prefix[k])
                if k == 0 and ctx is not None:
                    acc = acc + ctx[r0:r1]
            else:
                acc = torch.addmm(biases[k][r0:r1], prefix[k].t(), w[r0:r1, :c].t())
            accs.append(acc)
        for i in range(s0, s1):
            h = None
            for k, w in enumerate(weights):
                a, b = plan.rows[k][i]
                if a == b:
                    continue
                r0 = plan.rows[k][s0][0]
                c0 = prefix[k].shape[0]
                c1 = plan.cols[k][i]
                if k == last:
                    pre = accs[k][:, a - r0:b - r0]
                    if c1 > c0:
                        inp = torch.cat([t for _, t in pending[k]])
                        pre = torch.addmm(pre, inp.t(), w[a:b, c0:c1].t())
                    break
                pre = accs[k][a - r0:b - r0]
                if c1 > c0:
                    inp = torch.cat([t for _, t in pending[k]])
                    pre = torch.addmm(pre, w[a:b, c0:c1], inp)
                kind = plan.kinds[k]
                if kind == "stream":
                    h = pre
                    out = act(h)
                elif kind == "add":
                    h = h + pre
                    out = act(h)
                else:  # plain or the inner layer of a residual block
                    out = act(pre)
                pending[k + 1].append((i, out))
            else:  # pragma: no cover - the output layer always has P rows per dimension
                raise RuntimeError("output layer has no rows for a dimension")
            xi, li = family.inverse(zt[i], pre)
            xs.append(xi)
            ladjs.append(li)
            pending[0].append((i + 1, xi.unsqueeze(0)))  # x_{i+1} has degree i+1
    return torch.stack(xs, 1), torch.stack(ladjs, 1)


class GraphedInverse:
    """Replay an inverse captured in a CUDA graph (one per batch shape; no autograd).

    ``fn(z, context) -> (x, ladj)`` must be capturable: static shapes, no host sync. The
    masked weights are formed inside the graph from the parameters' memory, so in-place
    updates (optimizer steps, ``load_state_dict``) are seen; a replaced parameter tensor
    (``.to()``, ``param.data = ...``) changes the cache key and triggers a new capture.
    Only the latest capture is kept, to bound the memory pool.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: tuple[Tensor, Tensor | None] | None = None
        self.static_out: tuple[Tensor, Tensor] | None = None

    def __call__(self, fn, module: nn.Module, z: Tensor,
                 context: Tensor | None) -> tuple[Tensor, Tensor]:
        key = (tuple(z.shape), z.dtype, z.device,
               None if context is None else (tuple(context.shape), context.dtype),
               tuple(p.data_ptr() for p in module.parameters()), module.training)
        if key != self.key:
            self._capture(fn, z, context)
            self.key = key
        static_z, static_c = self.static_in
        static_z.copy_(z)
        if static_c is not None:
            static_c.copy_(context)
        self.graph.replay()
        return self.static_out[0].clone(), self.static_out[1].clone()

    def _capture(self, fn, z: Tensor, context: Tensor | None) -> None:
        self.graph = self.static_in = self.static_out = None
        static_z = z.clone()
        static_c = None if context is None else context.clone()
        stream = torch.cuda.Stream(device=z.device)
        stream.wait_stream(torch.cuda.current_stream(z.device))
        with torch.cuda.stream(stream):  # warm-up: lazy cuBLAS/allocator set-up
            fn(static_z, static_c)
        torch.cuda.current_stream(z.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(static_z, static_c)
        self.graph, self.static_in, self.static_out = graph, (static_z, static_c), out
