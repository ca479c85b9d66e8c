r"""Exactly symmetric densities: a flow averaged over the orbit of a finite group.

For a finite group ``G`` acting on the data by volume-preserving linear maps (orthogonal
matrices, ``|det g| = 1``) and any normalised density ``q``,

.. math::
    p(x) = \frac{1}{|G|}\sum_{g\in G} q(g x)

is normalised (each term is, as ``|det g| = 1``) and exactly invariant, ``p(hx) = p(x)`` for
every ``h`` in ``G`` (the sum runs over ``gh``, which is ``G`` again). ``log p`` is a
log-mean-exp over the orbit, so one density evaluation costs ``|G|`` evaluations of ``q``.
Sampling: draw ``y ~ q`` and return ``g⁻¹ y`` for a uniformly random ``g`` (the mixture
``(1/|G|) Σ_g q(g x)`` is exactly that; as ``G`` is a group, ``g⁻¹`` is uniform too).
This is the construction of Kanwar et al. (arXiv:2003.06413) for a finite group acting on the
data; for huge orbits (many exchangeable particles) an equivariant vector field (Köhler et al.,
arXiv:2006.02425) is the scalable route, not done here.

Groups (``symmetry`` key of :func:`flowctl.flows.build`):

* ``{group: dihedral, order: K}``: 2-D data, rotations by ``2πk/K`` and the reflections
  ``x → R_k·diag(1, -1)·x``: ``2K`` elements;
* ``{group: sign}``: ``x → ±x`` (2 elements);
* ``{group: permutation, particles: P}``: ``D = P·F``, the ``P!`` orderings of the particles
  (blocks of ``F`` consecutive features); ``P ≤ 6`` (720 elements).

The context is not acted on: conditional flows stay conditional, ``p(x | c)`` is invariant
in ``x`` for every ``c``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .core import Flow

GROUPS = ("dihedral", "sign", "permutation")
MAX_PARTICLES = 6


def dihedral_matrices(order: int) -> Tensor:
    """``[2K, 2, 2]``: the K rotations by ``2πk/K`` then the K reflections (float64)."""
    mats = []
    reflect = torch.tensor([[1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    rots = []
    for k in range(order):
        a = 2 * math.pi * k / order
        c, s = math.cos(a), math.sin(a)
        rots.append(torch.tensor([[c, -s], [s, c]], dtype=torch.float64))
    mats = rots + [r @ reflect for r in rots]
    return torch.stack(mats)


def permutation_matrices(particles: int, per_particle: int) -> Tensor:
    """``[P!, D, D]``: every reordering of ``P`` blocks of ``F`` features (float64)."""
    d = particles * per_particle
    eye = torch.eye(d, dtype=torch.float64)
    mats = []
    for perm in itertools.permutations(range(particles)):
        idx = torch.cat([torch.arange(p * per_particle, (p + 1) * per_particle) for p in perm])
        mats.append(eye[idx])
    return torch.stack(mats)


def group_matrices(spec: Mapping[str, Any], features: int) -> Tensor:
    """``symmetry`` spec -> ``[G, D, D]`` orthogonal matrices of the group's elements."""
    if not isinstance(spec, Mapping) or "group" not in spec:
        raise ValueError(f"flow key 'symmetry' must be a mapping with a 'group' "
                         f"({', '.join(GROUPS)}), got {spec!r}")
    group = spec["group"]
    allowed = {"dihedral": {"group", "order"}, "sign": {"group"},
               "permutation": {"group", "particles"}}
    if group not in allowed:
        raise ValueError(f"symmetry group must be one of {', '.join(GROUPS)}, got {group!r}")
    extra = set(spec) - allowed[group]
    if extra:
        raise ValueError(f"symmetry group {group!r} takes keys {sorted(allowed[group])}, "
                         f"got unknown {sorted(extra)}")
    if group == "sign":
        eye = torch.eye(features, dtype=torch.float64)
        return torch.stack([eye, -eye])
    if group == "dihedral":
        order = spec.get("order")
        if features != 2:
            raise ValueError(f"symmetry group dihedral acts on 2-D data, the flow has "
                             f"{features} features")
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"symmetry.order must be an integer >= 1, got {order!r}")
        return dihedral_matrices(order)
    particles = spec.get("particles")
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 2:
        raise ValueError(f"symmetry.particles must be an integer >= 2, got {particles!r}")
    if features % particles:
        raise ValueError(f"symmetry.particles={particles} does not divide features={features}")
    if particles > MAX_PARTICLES:
        raise ValueError(f"symmetry.particles={particles}: the orbit has {particles}! "
                         f"elements; at most {MAX_PARTICLES} particles are supported")
    return permutation_matrices(particles, features // particles)


class SymmetricFlow(nn.Module):
    """``p(x | c) = mean_g q(g x | c)`` for a flow ``q`` and group matrices ``[G, D, D]``.

    Same interface as :class:`Flow`: ``log_prob``, ``sample``, ``sample_and_log_prob``,
    ``initialize``; ``forward(x, context, objective)`` is ``log_prob`` for ``"nll"`` and, for
    other objectives (flow matching of a cnf), the inner flow's objective on ``g x`` with a
    random ``g`` per row (data augmentation: the inner flow learns the symmetric target).
    """

    def __init__(self, flow: Flow, matrices: Tensor, group: str = "") -> None:
        super().__init__()
        self.flow = flow
        self.features = flow.features
        self.context_features = flow.context_features
        self.group = group
        # float64 and not a buffer: .float()/.double() must not round the group elements
        # (the orbit's closure under composition is what makes the density invariant)
        self._matrices = matrices.to(torch.float64)

    def matrices(self, like: Tensor) -> Tensor:
        """``[G, D, D]`` group elements in the dtype and on the device of ``like``."""
        return self._matrices.to(device=like.device, dtype=like.dtype)

    @property
    def order(self) -> int:
        """Number of group elements ``|G|``."""
        return int(self._matrices.shape[0])

    def orbit(self, x: Tensor) -> Tensor:
        """``x [N, D] -> [G, N, D]``: ``g x`` for every group element."""
        return torch.einsum("gij,nj->gni", self.matrices(x), x)

    def _ctx(self, context: Tensor | None, n: int) -> Tensor | None:
        context = self.flow._context(context, n)
        return None if context is None else context.repeat(self.order, 1)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x [N, D] -> log p(x) [N]`` (log-mean-exp of the inner flow over the orbit)."""
        self.flow._check(x, context)
        n = x.shape[0]
        lp = self.flow.log_prob(self.orbit(x).reshape(-1, self.features), self._ctx(context, n))
        return torch.logsumexp(lp.view(self.order, n), 0) - math.log(self.order)

    def _act(self, y: Tensor, inverse: bool = True) -> Tensor:
        g = torch.randint(0, self.order, (y.shape[0],), device=y.device)
        mats = self.matrices(y)[g]
        if inverse:
            mats = mats.transpose(1, 2)  # orthogonal: g^-1 = g^T
        return torch.einsum("nij,nj->ni", mats, y)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """``[n, D]``: inner samples moved by uniformly random group elements."""
        return self._act(self.flow.sample(n, context))

    def sample_and_log_prob(self, n: int, context: Tensor | None = None
                            ) -> tuple[Tensor, Tensor]:
        """Samples ``[n, D]`` and their symmetrised ``log p [n]`` (``|G|`` inner densities)."""
        x = self.sample(n, context)
        return x, self.log_prob(x, context)

    def forward(self, x: Tensor, context: Tensor | None = None,
                objective: str = "nll") -> Tensor:
        if objective == "nll":
            return self.log_prob(x, context)
        return self.flow(self._act(x, inverse=False), context, objective=objective)

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> None:
        """Fit the inner flow's data-dependent layers on the whole orbit of ``x`` (so that a
        standardization sees symmetric statistics)."""
        self.flow._check(x, context)
        ctx = self._ctx(context, x.shape[0])
        self.flow.initialize(self.orbit(x).reshape(-1, self.features), ctx)

    def extra_repr(self) -> str:
        return f"group={self.group}, order={self.order}"


def make_symmetric(flow: Flow, spec: Mapping[str, Any]) -> SymmetricFlow:
    """Wrap ``flow`` in the group of a ``symmetry`` spec."""
    return SymmetricFlow(flow, group_matrices(spec, flow.features), str(spec["group"]))
