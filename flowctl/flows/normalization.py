"""Normalization layers as bijections with exact log-determinants."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .core import Transform


class ActNorm(Transform):
    """``z = (x - b) · exp(-s)`` per feature; ``b, s`` set from the first batch by
    :meth:`initialize` so that z has zero mean and unit variance (Kingma & Dhariwal 2018,
    arXiv:1807.03039), then trained."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = (x - self.shift) * torch.exp(-self.log_scale)
        return z, (-self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = z * torch.exp(self.log_scale) + self.shift
        return x, self.log_scale.sum().expand(z.shape[0])

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.shift.copy_(x.mean(0))
        self.log_scale.copy_(torch.log(x.std(0).clamp_min(1e-6)))
        return self.forward(x, context)[0]


class BatchNorm(Transform):
    """Batch normalization as a bijection (Dinh et al. 2016, arXiv:1605.08803).

    ``z = (x - μ) / sqrt(σ² + eps) · exp(γ) + β``. In training mode μ, σ² are the batch
    statistics (the log-det then is that of the map actually applied to the batch) and the
    running averages are updated; in eval mode, and always for the inverse, the running
    averages are used.
    """

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.log_gamma = nn.Parameter(torch.zeros(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training:
            mean = x.mean(0)
            var = x.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                n = x.shape[0]
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        z = (x - mean) * torch.rsqrt(var + self.eps) * self.log_gamma.exp() + self.beta
        ladj = (self.log_gamma - 0.5 * torch.log(var + self.eps)).sum()
        return z, ladj.expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, var = self.running_mean, self.running_var
        x = (z - self.beta) * (-self.log_gamma).exp() * torch.sqrt(var + self.eps) + mean
        ladj = (0.5 * torch.log(var + self.eps) - self.log_gamma).sum()
        return x, ladj.expand(z.shape[0])

    @torch.no_grad()
    def initialize(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        self.running_mean.copy_(x.mean(0))
        self.running_var.copy_(x.var(0))
        was = self.training
        self.eval()
        z = self.forward(x, context)[0]
        self.train(was)
        return z


def make_norm(name: str | None, features: int) -> Transform | None:
    """``none | actnorm | batchnorm`` -> layer (or None)."""
    if name in (None, "none", False):
        return None
    if name == "actnorm":
        return ActNorm(features)
    if name == "batchnorm":
        return BatchNorm(features)
    raise ValueError(f"unknown norm {name!r}; expected none, actnorm or batchnorm")
