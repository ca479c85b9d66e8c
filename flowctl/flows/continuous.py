r"""Continuous normalizing flows (FFJORD, Grathwohl et al. 2018, arXiv:1810.01367), trained by
maximum likelihood or by conditional flow matching (Lipman et al. 2022, arXiv:2210.02747;
Tong et al. 2023, arXiv:2302.00482).

Time runs from data (``t = 0``) to latent (``t = 1``): ``dx/dt = v(x, t, c)`` and, by the
instantaneous change of variables,

.. math::
    \log|\det \partial z/\partial x| = \int_0^1 \nabla\!\cdot v(x(t), t, c)\, dt .

The divergence is exact (``D`` autograd passes; for small ``D``) or, in training mode with
``trace="hutchinson"``, the unbiased estimate ``εᵀ (∂v/∂x) ε`` with one Rademacher ``ε`` per
solve (one pass). Evaluation always uses the exact trace, so reported densities are not noisy.
The ODE is solved by torchdiffeq (adaptive Dormand-Prince by default), optionally with the
adjoint method (memory independent of the number of solver steps).

Flow matching with optimal-transport paths: ``x_t = (1 - t) x_0 + t x_1`` between a data point
``x_0`` and a base sample ``x_1``, regressing ``v(x_t, t)`` on ``x_1 - x_0``. With
``ot=True`` the pairs within a mini-batch are re-matched by an exact assignment of squared
distances (minibatch OT-CFM, Tong et al.), which straightens the paths; it is unconditional
only (within a batch the contexts differ, so re-matching would bias ``p(x_1 | c)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .core import Flow, Transform
from .coupling import MLP

TRACES = ("exact", "hutchinson")
TIME_FREQUENCIES = (1.0, 2.0, 4.0)


def time_features(t: Tensor, n: int) -> Tensor:
    """Time (a scalar, or ``[n, 1]``: one per row) -> ``[n, 1 + 2F]``: ``t`` and
    ``sin/cos(π f t)`` for the fixed frequencies."""
    t = t.reshape(-1, 1).expand(n, 1)
    feats = [t]
    for f in TIME_FREQUENCIES:
        feats += [torch.sin(math.pi * f * t), torch.cos(math.pi * f * t)]
    return torch.cat(feats, dim=1)


class VectorField(nn.Module):
    """``v(x [N, D], t [], context [N, C]) -> [N, D]``: an MLP on ``[x, time features, c]``.

    The last layer is zeroed, so at initialisation ``v = 0`` (the identity flow).
    """

    def __init__(self, features: int, hidden: list[int], context: int = 0,
                 activation: str = "silu") -> None:
        super().__init__()
        self.features = features
        n_time = 1 + 2 * len(TIME_FREQUENCIES)
        self.net = MLP(features + n_time + context, features, hidden, activation=activation)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """``t``: a scalar tensor or ``[N, 1]``."""
        parts = [x, time_features(t.to(x.dtype), x.shape[0])]
        if context is not None:
            parts.append(context)
        return self.net(torch.cat(parts, dim=1))


class EquivariantField(nn.Module):
    """A permutation-equivariant ``v(x, t, context)`` for ``P`` exchangeable particles of ``F``
    features each (``D = P F``, particle-major): DeepSets (Zaheer et al. arXiv:1703.06114), as in
    equivariant flows (Köhler et al. arXiv:2006.02425). Particle ``i`` gets
    ``φ([x_i, mean_j ψ(x_j), time features, context])``, so permuting the particles of ``x``
    permutes ``v`` the same way; with an i.i.d. base the CNF's density is then exactly
    invariant under all ``P!`` permutations at the cost of one field, not ``P!``.
    """

    def __init__(self, particles: int, features: int, hidden: list[int], context: int = 0,
                 activation: str = "silu") -> None:
        super().__init__()
        if particles < 2 or features % particles:
            raise ValueError(f"symmetry.particles={particles} must be >= 2 and divide the "
                             f"{features} features")
        self.particles, self.per = particles, features // particles
        self.features = features
        n_time = 1 + 2 * len(TIME_FREQUENCIES)
        width = hidden[0]
        self.embed = MLP(self.per, width, hidden[:1], activation=activation, zero_init=False)
        self.net = MLP(self.per + width + n_time + context, self.per, hidden,
                       activation=activation)

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        n = x.shape[0]
        xp = x.reshape(n, self.particles, self.per)
        pooled = self.embed(xp.reshape(-1, self.per)).reshape(n, self.particles, -1).mean(1)
        shared = [pooled, time_features(t.to(x.dtype), n)]
        if context is not None:
            shared.append(context)
        shared_t = torch.cat(shared, dim=1).unsqueeze(1).expand(n, self.particles, -1)
        inp = torch.cat([xp, shared_t], dim=2).reshape(n * self.particles, -1)
        return self.net(inp).reshape(n, self.features)


def divergence(v: Tensor, x: Tensor, create_graph: bool, noise: Tensor | None = None) -> Tensor:
    """``∇·v`` per row ``[N]``: exact (``noise=None``, D passes) or Hutchinson ``εᵀJε``."""
    if noise is not None:
        (vjp,) = torch.autograd.grad(v, x, noise, create_graph=create_graph)
        return (vjp * noise).sum(1)
    div = v.new_zeros(v.shape[0])
    for i in range(v.shape[1]):
        (g,) = torch.autograd.grad(v[:, i].sum(), x, create_graph=create_graph,
                                   retain_graph=True)
        div = div + g[:, i]
    return div


class _Dynamics(nn.Module):
    """The augmented ODE ``d(x, l)/dt = (v, ∇·v)`` for one solve (holds context and noise)."""

    def __init__(self, field: VectorField, context: Tensor | None, noise: Tensor | None,
                 create_graph: bool) -> None:
        super().__init__()
        self.field = field
        self.context = context
        self.noise = noise
        self.create_graph = create_graph
        self.evaluations = 0

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]
        self.evaluations += 1
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            v = self.field(x, t, self.context)
            div = divergence(v, x, self.create_graph, self.noise)
        if not self.create_graph:
            v, div = v.detach(), div.detach()
        return v, div


class _Velocity(nn.Module):
    """``dx/dt = v(x, t, context)`` alone: for sampling, where no log-det is needed."""

    def __init__(self, field: VectorField, context: Tensor | None) -> None:
        super().__init__()
        self.field = field
        self.context = context
        self.evaluations = 0

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        self.evaluations += 1
        return self.field(x, t, self.context)


class ContinuousTransform(Transform):
    """``x -> z = x(1)`` with ``dx/dt = v(x, t, context)``, ``x(0) = x``; exact log-dets.

    Args:
        field: the vector field.
        trace: ``"exact"`` or ``"hutchinson"`` (the latter only in training mode).
        solver: a torchdiffeq method (``dopri5``, ``rk4``, ``euler``, ...).
        rtol, atol: tolerances of adaptive solvers; fixed-step solvers use ``step_size``.
        adjoint: solve the backward pass with the adjoint ODE (gradients reach the field's
            parameters, not the context).
        step_size: step of fixed-grid solvers.
    """

    def __init__(self, field: VectorField, trace: str = "exact", solver: str = "dopri5",
                 rtol: float = 1e-6, atol: float = 1e-6, adjoint: bool = False,
                 step_size: float = 0.05) -> None:
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"cnf trace must be one of {', '.join(TRACES)}, got {trace!r}")
        import torchdiffeq  # noqa: F401  (fail at build time if it is missing)

        self.field = field
        self.trace = trace
        self.solver = solver
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.adjoint = bool(adjoint)
        self.step_size = float(step_size)
        self.last_evaluations = 0

    def _solve(self, x: Tensor, context: Tensor | None, t0: float,
               t1: float) -> tuple[Tensor, Tensor]:
        from torchdiffeq import odeint, odeint_adjoint

        grad = torch.is_grad_enabled()
        noise = None
        if self.training and self.trace == "hutchinson":
            noise = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
        dyn = _Dynamics(self.field, context, noise, create_graph=grad)
        times = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
        state = (x, x.new_zeros(x.shape[0]))
        kwargs = self._kwargs()
        if self.adjoint and grad:
            xs, ls = odeint_adjoint(dyn, state, times,
                                    adjoint_params=tuple(self.field.parameters()), **kwargs)
        else:
            xs, ls = odeint(dyn, state, times, **kwargs)
        self.last_evaluations = dyn.evaluations
        return xs[-1], ls[-1]

    def _kwargs(self) -> dict:
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.solver}
        if self.solver in ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams"):
            kwargs["options"] = {"step_size": self.step_size}
        return kwargs

    def map_only(self, x: Tensor, context: Tensor | None = None, t0: float = 1.0,
                 t1: float = 0.0) -> Tensor:
        """``x(t1)`` from ``x(t0) = x [N, D]`` without the divergence: no trace, no autograd
        unless gradients are on (sampling). The solver controls the error of ``x`` alone, so it
        agrees with :meth:`inverse`'s ``x`` to the solver tolerance, not bit for bit."""
        from torchdiffeq import odeint

        dyn = _Velocity(self.field, context)
        times = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
        out = odeint(dyn, x, times, **self._kwargs())[-1]
        self.last_evaluations = dyn.evaluations
        return out

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x [N, D] -> (z [N, D], ∫ ∇·v dt [N])`` integrating t from 0 to 1."""
        return self._solve(x, context, 0.0, 1.0)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``z [N, D] -> (x [N, D], log|det dx/dz| [N])`` integrating t from 1 to 0."""
        return self._solve(z, context, 1.0, 0.0)

    def extra_repr(self) -> str:
        return (f"trace={self.trace}, solver={self.solver}, rtol={self.rtol}, "
                f"atol={self.atol}, adjoint={self.adjoint}")


def ot_pairing(x0: Tensor, x1: Tensor) -> Tensor:
    """Permutation ``p`` minimising ``Σ_i |x0_i - x1_{p_i}|²`` (exact assignment, scipy)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x0.detach().double(), x1.detach().double()).pow(2).cpu().numpy()
    _, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols, device=x1.device)


class ContinuousFlow(Flow):
    """A :class:`Flow` whose chain ends in a :class:`ContinuousTransform` (preprocessing
    layers, if any, come first), with the flow-matching objective.

    ``forward(x, context, objective="nll")`` returns ``log p(x)`` (the :class:`Flow`
    contract); ``objective="flow_matching"`` or ``"flow_matching_ot"`` returns the per-row
    flow-matching loss ``[N]`` instead, so DDP wrappers route either through ``forward``.
    """

    @property
    def cnf(self) -> ContinuousTransform:
        return self.transform[len(self.transform) - 1]

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``[n, D]`` samples by solving ``dx/dt = v`` alone (no trace: about half the cost of
        :meth:`sample_and_log_prob`, which also integrates the log-density)."""
        context = self._context(context, n)
        ref = next(iter(self.parameters()))
        z = self.base.sample(n, dtype=ref.dtype, device=ref.device)
        x = self.cnf.map_only(z, context, 1.0, 0.0)
        for layer in reversed(list(self.transform.transforms)[:-1]):
            x = layer.inverse(x, context)[0]
        return x

    def preprocess(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Data -> the space the vector field lives in (through the preprocessing layers)."""
        for layer in list(self.transform.transforms)[:-1]:
            x = layer(x, context)[0]
        return x

    def flow_matching_loss(self, x: Tensor, context: Tensor | None = None,
                           ot: bool = False) -> Tensor:
        """Per-row conditional flow-matching loss ``|v(x_t, t) - (x_1 - x_0)|² [N]``."""
        context = self._check(x, context)
        if ot and context is not None:
            raise ValueError("minibatch-OT flow matching is unconditional only; "
                             "use flow_matching with a context")
        x0 = self.preprocess(x, context)
        x1 = self.base.sample(x0.shape[0], dtype=x0.dtype, device=x0.device)
        if ot:
            x1 = x1[ot_pairing(x0, x1)]
        t = torch.rand(x0.shape[0], 1, dtype=x0.dtype, device=x0.device)
        xt = (1 - t) * x0 + t * x1
        v = self.cnf.field(xt, t, context)
        return (v - (x1 - x0)).pow(2).sum(1)

    def forward(self, x: Tensor, context: Tensor | None = None,
                objective: str = "nll") -> Tensor:
        if objective == "nll":
            return self.log_prob(x, context)
        if objective in ("flow_matching", "flow_matching_ot"):
            return self.flow_matching_loss(x, context, ot=objective == "flow_matching_ot")
        raise ValueError(f"unknown objective {objective!r}; expected nll, flow_matching "
                         "or flow_matching_ot")

