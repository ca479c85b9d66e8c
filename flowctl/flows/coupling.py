"""Coupling (bipartite) transforms: RealNVP (Dinh et al. 2016, arXiv:1605.08803) and NSF-C
(Durkan et al. 2019, arXiv:1906.04032).

A boolean mask splits the features: the masked-out part passes unchanged and conditions, through
an MLP (with the context concatenated), the element-wise map of the masked-in part. Both
directions cost one conditioner pass.

Without autograd on the CPU the rows are taken in chunks whose widest intermediate (hidden layer
or spline parameters) holds at most ``chunk_elements`` floats (2 MiB by default), so the
temporaries are reused from the allocator's cache instead of being mapped and faulted in afresh
for every layer: the same numbers, ~5 % less CPU time for W2's log_prob and sampling at
65 536 rows (one thread, A/B in one process). With autograd, or on a GPU, the batch is taken
whole.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .core import Transform
from .elementwise import ElementwiseFamily
from .linear import Linear
from .made import activate_fresh, make_activation
from .splines import SplineLayout, spline_knot_major

CHUNK_ELEMENTS = 1 << 19  # floats in the widest per-chunk intermediate (no grad, CPU)


class MLP(nn.Module):
    """``[N, in] -> [N, out]``; optional residual blocks; last layer zeroed (identity flow)."""

    def __init__(self, in_features: int, out_features: int, hidden: list[int],
                 residual: bool = False, dropout: float = 0.0, activation: str = "relu",
                 zero_init: bool = True) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the conditioner MLP needs at least one hidden layer")
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"residual conditioner needs equal hidden widths, got {hidden}")
        self.residual = residual
        self.input_layer = Linear(in_features, hidden[0])
        if residual:
            self.hidden_layers = nn.ModuleList(
                nn.Linear(hidden[0], hidden[0]) for _ in range(2 * (len(hidden) - 1)))
        else:
            self.hidden_layers = nn.ModuleList(
                nn.Linear(hidden[i], hidden[i + 1]) for i in range(len(hidden) - 1))
        self.output_layer = nn.Linear(hidden[-1], out_features)
        self.activation = make_activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if zero_init:
            nn.init.zeros_(self.output_layer.weight)
            nn.init.zeros_(self.output_layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_layer(self.hidden_state(x))

    def hidden_state(self, x: Tensor, out: list[Tensor] | None = None) -> Tensor:
        """The last hidden layer after its activation (and dropout), ``[N, H]``.

        ``out``: without autograd, one buffer ``[>= N, H_i]`` per hidden layer (extra entries
        are ignored) that the layers write into instead of allocating: the chunked no-grad
        passes reuse them from chunk to chunk. Ignored for residual networks."""
        if out is not None and not self.residual and not torch.is_grad_enabled():
            return self._hidden_state_into(x, out)
        h = self.input_layer(x)
        if self.residual:
            for first, second in zip(self.hidden_layers[0::2], self.hidden_layers[1::2]):
                r = first(self.activation(h))
                h = h + second(self.dropout(activate_fresh(self.activation, r)))
            h = self.dropout(activate_fresh(self.activation, h))
        else:
            h = self.dropout(activate_fresh(self.activation, h))
            for layer in self.hidden_layers:
                h = self.dropout(activate_fresh(self.activation, layer(h)))
        return h

    def _hidden_state_into(self, x: Tensor, out: list[Tensor]) -> Tensor:
        h = x
        for layer, buf in zip([self.input_layer, *self.hidden_layers], out):
            h = torch.addmm(layer.bias, h, layer.weight.t(), out=buf[:x.shape[0]])
            h = self.dropout(activate_fresh(self.activation, h))
        return h


class Coupling(Transform):
    """``z_B = τ(x_B; θ(x_A, context))``, ``z_A = x_A`` where ``mask`` marks B (transformed).

    Args:
        mask: bool ``[D]``, True for the transformed features (at least one of each kind).
        family: element-wise map τ.
        hidden, context, residual, dropout, activation: the conditioner MLP.
        chunk_elements: without autograd on the CPU, rows per chunk are chosen so the widest
            intermediate holds at most this many floats (0 = whole batch; see the module doc).
    """

    def __init__(self, mask: Tensor, family: ElementwiseFamily, hidden: list[int],
                 context: int = 0, residual: bool = False, dropout: float = 0.0,
                 activation: str = "relu", chunk_elements: int = CHUNK_ELEMENTS) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        n_tr = int(mask.sum())
        if n_tr == 0 or n_tr == mask.numel():
            raise ValueError("a coupling mask must transform some but not all features")
        identity_idx = torch.nonzero(~mask).flatten()
        transform_idx = torch.nonzero(mask).flatten()
        order = torch.cat([identity_idx, transform_idx])
        self.register_buffer("identity_idx", identity_idx)
        self.register_buffer("transform_idx", transform_idx)
        self.register_buffer("unsort", torch.argsort(order))
        self.family = family
        self.n_transformed = n_tr
        self.net = MLP(len(identity_idx) + context, n_tr * family.num_params, hidden,
                       residual=residual, dropout=dropout, activation=activation)
        self.chunk_elements = int(chunk_elements)
        self._row_width = max(*hidden, n_tr * family.num_params, len(mask))
        # Output rows in parameter-major order (p, d) instead of (d, p), so that the transposed
        # product W h^T is the spline's knot-major parameter block [P, n_tr * N] as it stands.
        p_count = family.num_params
        order = torch.arange(n_tr * p_count).view(n_tr, p_count).t().reshape(-1)
        self.register_buffer("param_major", order, persistent=False)

    def _params(self, x_id: Tensor, context: Tensor | None) -> Tensor:
        h = x_id if context is None else torch.cat([x_id, context], dim=-1)
        return self.net(h).view(x_id.shape[0], self.n_transformed, self.family.num_params)

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        n = x.shape[0]
        rows = max(1, self.chunk_elements // self._row_width) if self.chunk_elements > 0 else n
        if rows >= n or torch.is_grad_enabled() or x.device.type != "cpu":
            return self._couple_rows(x, context, inverse)
        per_row = context is not None and context.shape[0] == n
        work = [x.new_empty(rows, layer.out_features)
                for layer in [self.net.input_layer, *self.net.hidden_layers,
                              self.net.output_layer]]
        parts = [self._couple_rows(x[i:i + rows], context[i:i + rows] if per_row else context,
                                   inverse, work) for i in range(0, n, rows)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _couple_rows(self, x: Tensor, context: Tensor | None, inverse: bool,
                     work: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        x_id = x.index_select(1, self.identity_idx)
        x_tr = x.index_select(1, self.transform_idx)
        layout = self.family.knot_major_layout()
        # the transposed hand-off pays where the knot-major spline runs: on the CPU, without
        # autograd or in the x -> y direction (y -> x under autograd is the reference)
        if (layout is not None and x.dim() == 2 and x.device.type == "cpu"
                and not (inverse and torch.is_grad_enabled())):
            y_tr, ladj_sum = self._spline_knot_major(x_id, x_tr, context, layout, inverse,
                                                     work)
        else:
            params = self._params(x_id, context)
            step = self.family.inverse if inverse else self.family.forward
            y_tr, ladj = step(x_tr, params)
            ladj_sum = ladj.sum(-1)
        y = torch.cat([x_id, y_tr], dim=-1).index_select(1, self.unsort)
        return y, ladj_sum

    def _spline_knot_major(self, x_id: Tensor, x_tr: Tensor, context: Tensor | None,
                           layout: SplineLayout, inverse: bool,
                           work: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The spline family with the conditioner's last layer written transposed: one
        ``W h^T`` gives the knot-major parameters, with no layout copies either way. ``work``:
        the hidden layers' reusable buffers (:meth:`MLP.hidden_state`)."""
        n = x_id.shape[0]
        h = self.net.hidden_state(x_id if context is None else torch.cat([x_id, context], -1),
                                  out=work)
        last = self.net.output_layer
        weight = last.weight.index_select(0, self.param_major)
        bias = last.bias.index_select(0, self.param_major)
        if work is None:
            params_km = torch.addmm(bias.unsqueeze(1), weight, h.t())
        else:  # the last buffer, read flat: [P, n] stays contiguous for the last, short chunk
            flat = work[-1].view(-1)[:weight.shape[0] * n].view(weight.shape[0], n)
            params_km = torch.addmm(bias.unsqueeze(1), weight, h.t(), out=flat)
        v = x_tr.t().reshape(-1)  # element m = d * N + n, as the columns of params_km
        out, ladj = spline_knot_major(v, params_km.view(self.family.num_params, -1), layout,
                                      inverse)
        return out.view(self.n_transformed, n).t(), ladj.view(self.n_transformed, n).sum(0)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, context, inverse=True)


def binary_masks(features: int) -> list[Tensor]:
    """i-flow masks: for each bit b of the feature index, the features whose bit b is 1 and
    its complement — ``2⌈log2 D⌉`` masks, after which every pair of features has been split."""
    if features < 2:
        raise ValueError("binary masks need at least 2 features")
    bits = math.ceil(math.log2(features))
    idx = torch.arange(features)
    masks = []
    for b in range(bits):
        m = ((idx >> b) & 1).bool()
        masks += [m, ~m]
    return masks


def alternating_masks(features: int, layers: int, permutations: list[Tensor | None]) -> list[Tensor]:
    """Half/half masks: each layer transforms whichever half (first or second, in the current
    order after the permutations so far) holds more never-transformed features, then the one
    transformed less often, so every original feature is transformed early and about equally.

    ``permutations[l]`` is the feature permutation applied just before layer ``l`` (or None).
    """
    if features < 2:
        raise ValueError("a coupling flow needs at least 2 features")
    current = torch.arange(features)      # current position -> original feature
    counts = torch.zeros(features)
    half = features // 2
    first = torch.zeros(features, dtype=torch.bool)
    first[:half] = True
    masks = []
    for layer in range(layers):
        perm = permutations[layer]
        if perm is not None:
            current = current[perm]
        options = [~first, first]  # transform the second half, or the first half
        # prefer the half with more never-transformed features, then the less used one
        scores = [(-(counts[current[m]] == 0).sum().item(), counts[current[m]].mean().item())
                  for m in options]
        pick = 0 if scores[0] < scores[1] else 1 if scores[1] < scores[0] else layer % 2
        mask = options[pick]
        counts[current[mask]] += 1
        masks.append(mask)
    return masks
