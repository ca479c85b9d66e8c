r"""Manifold-learning flows (M-flow, Brehmer & Cranmer 2020, arXiv:2003.13913).

Data in ``R^n`` near a ``d``-dimensional manifold. A bijection ``f: R^n -> R^n`` (the outer
flow, data -> latent) and a ``d``-dimensional flow ``p_u`` (the latent flow) define

* the injective map ``g(u) = f^{-1}([u, 0])`` from ``R^d`` onto the learned manifold ``M``;
* the encoder ``h(x) = f(x)_{:d}`` and the projection ``π(x) = g(h(x))`` onto ``M``, exactly
  idempotent as ``h(g(u)) = u``;
* the density on the manifold (with respect to its ``d``-dimensional volume),

.. math::
    \log p(x) = \log p_u(u) - \tfrac12 \log\det\big(J_g(u)^\top J_g(u)\big),\qquad u = h(x),

evaluated at the projection of ``x`` (for ``x`` on ``M`` that is ``x`` itself). ``J_g`` is
``[n, d]``, computed by ``n`` autograd passes through the inverse of the outer flow.

Training, as in the paper's M-flow, in two phases: the manifold (outer flow) by the
reconstruction error ``|x - π(x)|²``, then the density on it by maximum likelihood of the
latent flow on ``u = h(x)`` with the outer flow frozen (the Jacobian term does not depend on
the latent flow). ``forward(x, context, objective)`` gives ``log p`` for ``"nll"`` and the
per-row losses ``"reconstruction"`` and ``"latent_nll"`` for the two phases. The context, if
any, conditions the latent flow only (the manifold is shared).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .core import Flow, Transform

OBJECTIVES = ("nll", "reconstruction", "latent_nll")


class ManifoldFlow(nn.Module):
    """M-flow with an outer ``n``-dim transform and a ``d``-dim latent :class:`Flow`.

    Args:
        outer: data -> latent bijection of ``R^n`` (e.g. a coupling chain).
        latent_flow: flow on ``R^d`` (its context is this flow's context).
        features: n; latent: d (``1 <= d < n``).
    """

    def __init__(self, outer: Transform, latent_flow: Flow, features: int, latent: int) -> None:
        super().__init__()
        if not 1 <= latent < features:
            raise ValueError(f"mflow needs 1 <= latent < features, got latent={latent}, "
                             f"features={features}")
        self.outer = outer
        self.latent_flow = latent_flow
        self.features = features
        self.latent = latent
        self.context_features = latent_flow.context_features

    def _check(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"expected data of shape [N, {self.features}], got {tuple(x.shape)}")

    def encode(self, x: Tensor) -> Tensor:
        """``x [N, n] -> u [N, d]``: the first d latent coordinates of the outer flow."""
        self._check(x)
        return self.outer(x)[0][:, :self.latent]

    def decode(self, u: Tensor) -> Tensor:
        """``u [N, d] -> x [N, n]`` on the manifold: ``f^{-1}([u, 0])``."""
        pad = u.new_zeros(u.shape[0], self.features - self.latent)
        return self.outer.inverse(torch.cat([u, pad], dim=1))[0]

    def project(self, x: Tensor) -> Tensor:
        """``x [N, n] ->`` its projection onto the learned manifold ``[N, n]``."""
        return self.decode(self.encode(x))

    def log_volume(self, u: Tensor) -> Tensor:
        """``½ log det(J_gᵀ J_g)`` at ``u [N, d] -> [N]`` (the manifold's volume element)."""
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            v = u if u.requires_grad else u.detach().requires_grad_(True)
            x = self.decode(v)
            rows = [torch.autograd.grad(x[:, i].sum(), v, create_graph=create,
                                        retain_graph=True)[0] for i in range(self.features)]
        jac = torch.stack(rows, dim=1)  # [N, n, d]
        gram = jac.transpose(1, 2) @ jac
        out = 0.5 * torch.linalg.slogdet(gram).logabsdet
        return out if create else out.detach()

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Density on the manifold at the projection of ``x [N, n]`` -> ``[N]``."""
        u = self.encode(x)
        return self.latent_flow.log_prob(u, context) - self.log_volume(u)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``[n, features]`` samples on the manifold."""
        return self.decode(self.latent_flow.sample(n, context))

    def sample_and_log_prob(self, n: int, context: Tensor | None = None
                            ) -> tuple[Tensor, Tensor]:
        """Samples ``[n, features]`` on the manifold and their ``log p [n]``."""
        u, lp = self.latent_flow.sample_and_log_prob(n, context)
        return self.decode(u), lp - self.log_volume(u)

    def forward(self, x: Tensor, context: Tensor | None = None,
                objective: str = "nll") -> Tensor:
        if objective == "nll":
            return self.log_prob(x, context)
        if objective == "reconstruction":
            return (x - self.project(x)).pow(2).sum(1)
        if objective == "latent_nll":
            return -self.latent_flow.log_prob(self.encode(x).detach(), context)
        raise ValueError(f"unknown objective {objective!r}; expected {', '.join(OBJECTIVES)}")

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> None:
        """Fit the data-dependent layers: the outer flow's on ``x``, the latent flow's on
        the encoded ``x``."""
        self._check(x)
        was_training = self.training
        self.train()
        self.outer.initialize(x)
        self.latent_flow.initialize(self.encode(x), context)
        self.train(was_training)
