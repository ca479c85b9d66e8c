"""Masked autoregressive transforms: MAF (Papamakarios et al. 2017, arXiv:1705.07057) and
IAF (Kingma et al. 2016, arXiv:1606.04934).

:class:`MaskedAutoregressive` maps ``x -> z`` with ``z_i = τ(x_i; θ_i(x_<i))``: the forward
(density of a MAF) is one MADE pass; the inverse (sampling a MAF) needs the dimensions one at a
time, D MADE passes. An IAF is the same layer used the other way round
(:func:`iaf_layer`): sampling is one pass, density D passes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .core import Inverse, Transform
from .elementwise import ElementwiseFamily
from .made import MADE


class MaskedAutoregressive(Transform):
    """``z_i = τ(x_i; θ_i(x_<i, context))`` with a MADE conditioner.

    Args:
        features: D.
        family: element-wise map τ (affine, RQS, ...).
        hidden, context, residual, dropout, activation: passed to :class:`MADE`.
    """

    def __init__(self, features: int, family: ElementwiseFamily, hidden: list[int],
                 context: int = 0, residual: bool = False, dropout: float = 0.0,
                 activation: str = "relu") -> None:
        super().__init__()
        self.features = features
        self.family = family
        self.made = MADE(features, family.num_params, hidden, context=context,
                         residual=residual, dropout=dropout, activation=activation)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        params = self.made(x, context)
        z, ladj = self.family(x, params)
        return z, ladj.sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """D MADE passes: after pass ``i`` the dimensions ``0..i`` are final."""
        x = torch.zeros_like(z)
        ladj = z.new_zeros(z.shape)
        columns = torch.arange(self.features, device=z.device)
        for i in range(self.features):
            params = self.made(x, context)[:, i]
            xi, li = self.family.inverse(z[:, i], params)
            col = columns[i:i + 1]
            x = x.index_copy(1, col, xi.unsqueeze(1))
            ladj = ladj.index_copy(1, col, li.unsqueeze(1))
        return x, ladj.sum(-1)


def iaf_layer(features: int, family: ElementwiseFamily, hidden: list[int], context: int = 0,
              residual: bool = False, dropout: float = 0.0,
              activation: str = "relu") -> Transform:
    """IAF layer: ``x = τ(z; θ(z_<i))`` when sampling (one pass); density takes D passes."""
    return Inverse(MaskedAutoregressive(features, family, hidden, context=context,
                                        residual=residual, dropout=dropout,
                                        activation=activation))
