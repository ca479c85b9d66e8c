"""Transforms, chains and the :class:`Flow` distribution.

Convention (nflows-style): a transform maps data ``x`` to latent ``z``.

* ``forward(x, context=None) -> (z, logabsdet)`` with ``logabsdet = log|det dz/dx|``, shape ``[N]``;
* ``inverse(z, context=None) -> (x, logabsdet)`` with ``logabsdet = log|det dx/dz|``, shape ``[N]``.

A :class:`Flow` is ``base`` pushed through the inverse of ``transform``:
``log p(x) = log p_base(z) + log|det dz/dx|``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class Transform(nn.Module):
    """A bijection ``x -> z`` with log-determinants in both directions."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x [N, D] -> (z [N, D], log|det dz/dx| [N])``."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``z [N, D] -> (x [N, D], log|det dx/dz| [N])``."""
        raise NotImplementedError(f"{type(self).__name__} does not define inverse")

    def initialize(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Fit data-dependent state (statistics, ActNorm) on a data batch; return ``forward(x)``.

        The default has no state to fit.
        """
        with torch.no_grad():
            return self.forward(x, context)[0]


class Chain(Transform):
    """Composition ``t_n ∘ … ∘ t_1`` (data goes through ``transforms[0]`` first)."""

    def __init__(self, transforms: Iterable[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x, context)
            total = total + ld
        return x, total

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for t in reversed(self.transforms):
            z, ld = t.inverse(z, context)
            total = total + ld
        return z, total

    def initialize(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        for t in self.transforms:
            x = t.initialize(x, context)
        return x

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]


class Inverse(Transform):
    """Swap the directions of a transform: ``Inverse(t).forward == t.inverse``."""

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        self.base_transform = transform

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.base_transform.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.base_transform(z, context)


def broadcast_context(context: Tensor | None, n: int) -> Tensor | None:
    """Context ``[C]`` or ``[1, C]`` (shared) or ``[n, C]`` -> ``[n, C]``."""
    if context is None:
        return None
    if context.dim() == 1:
        context = context.unsqueeze(0)
    if context.dim() != 2:
        raise ValueError(f"context must be [C] or [N, C], got shape {tuple(context.shape)}")
    if context.shape[0] == n:
        return context
    if context.shape[0] == 1:
        return context.expand(n, -1)
    raise ValueError(f"context has {context.shape[0]} rows but the batch has {n}")


class Flow(nn.Module):
    """A normalizing flow: a base distribution and a data->latent transform.

    Args:
        transform: the data->latent chain.
        base: a base distribution module with ``log_prob(z) -> [N]`` and
            ``sample(n, dtype, device) -> [n, D]``.
        features: dimension D of the data.
        context: dimension C of the conditioning variables (0 = unconditional).
    """

    def __init__(self, transform: Transform, base: nn.Module, features: int,
                 context: int = 0) -> None:
        super().__init__()
        self.transform = transform
        self.base = base
        self.features = features
        self.context_features = context

    def _check(self, x: Tensor, context: Tensor | None) -> Tensor | None:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"expected data of shape [N, {self.features}], "
                             f"got {tuple(x.shape)}")
        return self._context(context, x.shape[0])

    def _context(self, context: Tensor | None, n: int) -> Tensor | None:
        if self.context_features == 0:
            if context is not None:
                raise ValueError("this flow is unconditional but a context was given")
            return None
        if context is None:
            raise ValueError(f"this flow needs a context of {self.context_features} features")
        context = broadcast_context(context, n)
        if context.shape[1] != self.context_features:
            raise ValueError(f"expected context of {self.context_features} features, "
                             f"got {context.shape[1]}")
        return context

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x [N, D]`` (context ``[N, C]`` or ``[C]``) -> ``log p(x) [N]`` in data units."""
        context = self._check(x, context)
        z, ld = self.transform(x, context)
        return self.base.log_prob(z) + ld

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Alias of :meth:`log_prob` so DDP wrappers call the likelihood."""
        return self.log_prob(x, context)

    def sample(self, n: int, context: Tensor | None = None) -> Tensor:
        """Draw ``[n, D]`` samples; context ``[C]`` (shared) or ``[n, C]`` (one per sample)."""
        return self.sample_and_log_prob(n, context)[0]

    def sample_and_log_prob(self, n: int, context: Tensor | None = None
                            ) -> tuple[Tensor, Tensor]:
        """Samples ``[n, D]`` and their ``log p [n]`` from one pass through the inverse."""
        context = self._context(context, n)
        ref = next(iter(self.parameters()), None)
        if ref is None:
            ref = next(iter(self.buffers()))
        z = self.base.sample(n, dtype=ref.dtype, device=ref.device)
        x, ld = self.transform.inverse(z, context)
        return x, self.base.log_prob(z) - ld

    def transform_to_latent(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``x [N, D] -> z [N, D]``."""
        context = self._check(x, context)
        return self.transform(x, context)[0]

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> None:
        """Fit the data-dependent layers (standardization, min-max, ActNorm) on ``x [N, D]``."""
        context = self._check(x, context)
        was_training = self.training
        self.train()
        self.transform.initialize(x, context)
        self.train(was_training)
